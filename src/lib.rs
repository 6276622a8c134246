//! forgexec: a CI build executor that runs inside any container image.
//!
//! The library holds all logic; the `forgexec` and `forge-launch` binaries
//! only parse arguments and render errors. Modules by concern:
//! - [`spec`]: the `.forge.yml` model, its validation and JSON Schema.
//! - `launch` (feature `launcher`): `forge-launch`, which starts builds in
//!   Docker Swarm services or local containers.

pub mod cli;
#[cfg(feature = "launcher")]
pub mod launch;
pub mod secret;
pub mod spec;
