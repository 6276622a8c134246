//! forgexec: a CI build executor that runs inside any container image.
//!
//! The library holds all logic; the `forgexec` and `forge-launch` binaries
//! only parse arguments and render errors. Modules by concern:
//! - [`spec`]: the `.forge.yml` model, its validation and JSON Schema.
//! - [`facts`]: the build facts: checked names, the `FORGE_*` contract and
//!   the one step that validates them.
//! - [`exit`]: the exit codes of both binaries.
//! - [`run`]: the stage runner (processes, output, masking, cancellation).
//! - [`init`]: PID 1 duties inside the container.
//! - [`http`]: the shared HTTP client (embedded roots, private CA, retries).
//! - [`forge`]: commit statuses and source zipballs from the forge.
//! - [`workspace`]: the source tree a build runs in, unpacked safely.
//! - [`fsread`]: reading files whose path others control, without
//!   blocking and within a size.
//! - [`artifacts`]: collecting, zipping and uploading build outputs.
//! - [`status`]: commit statuses as a build reports them.
//! - [`services`]: sidecar services from inside the build (waiting for
//!   their ports).
//! - [`render`]: the one place an error becomes (masked) text.
//! - [`build`]: one CI build end to end, from environment to final status.
//! - [`local`]: the same build on a developer's machine (`forgexec run`)
//!   and as a git pre-push hook.
//! - `launch` (feature `launcher`): `forge-launch`, which starts builds in
//!   Docker Swarm services or local containers.

pub mod artifacts;
pub mod build;
pub mod cli;
pub mod clock;
pub mod exit;
pub mod facts;
pub mod forge;
pub mod fsread;
pub mod http;
pub mod init;
#[cfg(feature = "launcher")]
pub mod launch;
pub mod local;
pub mod render;
pub mod run;
pub mod secret;
pub mod services;
pub mod spec;
pub mod status;
pub mod workspace;
