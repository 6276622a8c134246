//! forgexec: a CI build executor that runs inside any container image.
//!
//! The library holds all logic; the `forgexec` and `forge-launch` binaries
//! only parse arguments and render errors. Modules by concern:
//! - [`spec`]: the `.forge.yml` model, its validation and JSON Schema.

pub mod cli;
pub mod context;
pub mod run;
pub mod secret;
pub mod spec;
