//! The integration tests, one binary (one link of the dependency graph):
//! a module per area, all against real parts (see `common`). The launcher's
//! modules need the `launcher` feature, like the binary they drive.

mod common;

#[cfg(feature = "launcher")]
mod aarch64;
mod binary_size;
#[cfg(feature = "launcher")]
mod cluster;
mod docker_support;
mod executor;
mod forge_server;
mod fuzz;
#[cfg(feature = "launcher")]
mod launch_binary;
#[cfg(feature = "launcher")]
mod launch_forge;
#[cfg(feature = "launcher")]
mod launch_swarm;
#[cfg(feature = "launcher")]
mod launch_tls;
mod local;
mod nginx_webdav;
#[cfg(feature = "launcher")]
mod serve;
#[cfg(feature = "launcher")]
mod sidecars;
mod static_binary;
mod transfer;
mod validate;
