//! The launcher's typed errors and their exit codes.

use std::path::PathBuf;

/// Exit codes, the same meaning as forgexec's: 2 for bad input (flags,
/// event, `.forge.yml`), 3 for infrastructure (Docker, the forge API).
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const INVALID: u8 = 2;
    pub const INFRASTRUCTURE: u8 = 3;
}

/// Everything that can stop a launch.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{label}: not a pull_request webhook payload: {reason}")]
    Event { label: String, reason: String },
    #[error("missing {what}: give {flag} (or an --event payload that has it)")]
    MissingFact {
        what: &'static str,
        flag: &'static str,
    },
    #[error("invalid {flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    /// The `.forge.yml` is invalid; the message names file:line:column.
    #[error("{0}")]
    Spec(String),
    #[error("{label}: the .forge.yml has no `image:`; add the image to build in, e.g. `image: rust:1.85`")]
    NoImage { label: String },
    #[error("forge API: {0}")]
    Forge(String),
    /// A Docker API call failed; `message` is the daemon's own message.
    #[error("docker: {action}: {message}")]
    Docker { action: String, message: String },
    #[error("the build task of service {service} failed: {err}")]
    TaskFailed { service: String, err: String },
    #[error("timed out after {seconds}s waiting for the build task of service {service} to be placed (last state: {state}); raise --start-timeout or check `docker service ps {service}`")]
    TaskTimeout {
        service: String,
        seconds: u64,
        state: String,
    },
    #[error("the image of service {service} already runs its own /forgexec (task state {state}); forge-launch cannot inject the executor into it")]
    ImageHasForgexec { service: String, state: String },
    #[error("node {node}: {reason}")]
    NodeAccess { node: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("local mode: {0}")]
    Local(String),
    #[error(transparent)]
    Binary(#[from] super::binary::BinaryError),
}

impl LaunchError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Read { .. }
            | LaunchError::Event { .. }
            | LaunchError::MissingFact { .. }
            | LaunchError::Flag { .. }
            | LaunchError::Spec(_)
            | LaunchError::NoImage { .. } => exit::INVALID,
            LaunchError::Binary(e) => e.exit_code(),
            _ => exit::INFRASTRUCTURE,
        }
    }

    /// Wraps a bollard error, keeping the daemon's message verbatim.
    pub fn docker(action: impl Into<String>, err: bollard::errors::Error) -> Self {
        LaunchError::Docker {
            action: action.into(),
            message: docker_message(&err),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LaunchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The API's message for a daemon error, or bollard's rendering otherwise.
pub fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => {
            // bollard's own message hides the cause (e.g. the TLS alert).
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let part = cause.to_string();
                if !text.contains(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// Whether a bollard error is the daemon saying "no such object".
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
