//! `forge-launch`: starts a `.forge.yml` build for a pull request in a Docker
//! Swarm service (or, in local mode, in a plain container on this daemon).
//! The flow: turn the webhook facts ([`event`]) and
//! the validated spec into a build plan ([`plan`]: environment, labels, a
//! Docker-safe service name), remove stale services of the same pull request
//! and create one service whose task fails to start for lack of `/forgexec`
//! ([`service`]), connect to the daemon of the node running the task
//! ([`node`], mutual TLS for remote nodes), copy forgexec (the binary for
//! the node's or image's architecture, [`binary`]) and the token in with
//! the archive API ([`archive`]) and start the container, then its sidecar
//! services beside it on the same node ([`sidecar`]); [`watch`] follows a
//! build to its end, or to the loss of its node. [`forge`] talks to
//! the forge API (spec download, error statuses); [`container`] runs the
//! same build on the local daemon for reproduction; [`cli`] is the command
//! line and the one place errors are rendered.

pub mod archive;
pub mod binary;
pub mod cli;
pub mod container;
pub mod error;
pub mod event;
pub mod forge;
pub mod node;
pub mod plan;
pub mod registry;
pub mod serve;
pub mod service;
pub mod sidecar;
pub mod swarm;
pub mod watch;

pub use error::LaunchError;
