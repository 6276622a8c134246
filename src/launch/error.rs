//! The launcher's typed errors and their exit codes (the table is
//! [`crate::exit`]: 2 for bad input, 3 for infrastructure).

use std::fmt;
use std::path::PathBuf;

use crate::exit;
use crate::facts::FactsError;
use crate::forge::ForgeError;
use crate::local::git::GitError;
use crate::spec::SpecError;

/// Problems with the facts of a launch, each named by the flag that fixes it.
#[derive(Debug)]
pub struct FactFlagsError(pub FactsError);

impl fmt::Display for FactFlagsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid build facts (from the flags and --event):")?;
        for p in &self.0.problems {
            write!(
                f,
                "\n  {}: {} {}\n    help: give {}, {}",
                super::event::flag_of(p.variable),
                p.variable,
                p.problem,
                super::event::flag_of(p.variable),
                p.fix
            )?;
        }
        Ok(())
    }
}

/// Everything that can stop a launch.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that is not a regular file, or too large, for what it is.
    #[error("{0}")]
    Refused(crate::fsread::FsReadError),
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
    #[error("{0}")]
    Facts(FactFlagsError),
    /// The `.forge.yml` is invalid; the message names file:line:column.
    #[error("{0}")]
    Spec(Box<SpecError>),
    #[error("{commit}: no .forge.yml at the repository root; add one (see docs/forge-yml.md)")]
    NoSpec { commit: String },
    #[error("action `{action}` is not in {label} (has: {})\n  help: pass one of them with --action", .known.join(", "))]
    UnknownAction {
        label: String,
        action: String,
        known: Vec<String>,
    },
    #[error("the .forge.yml asks for {what}: {asked}, more than the {max} this launcher allows ({flag}); ask for less under `resources:`")]
    OverLimit {
        what: &'static str,
        asked: String,
        flag: &'static str,
        max: String,
    },
    #[error("{label}: the .forge.yml has no `image:`; add the image to build in, e.g. `image: rust:1.85`")]
    NoImage { label: String },
    #[error("forge API: {0}")]
    Forge(#[source] Box<ForgeError>),
    /// The GitHub App's credentials (`forge-launch serve`).
    #[error(transparent)]
    App(#[from] super::serve::app::AppError),
    /// A Docker API call failed; `message` is the daemon's own message.
    #[error("docker: {action}: {message}")]
    Docker { action: String, message: String },
    #[error("the build task of service {service} failed: {err}")]
    TaskFailed {
        service: String,
        /// The node's hostname (or id) the task was on, if placed.
        node: String,
        err: String,
    },
    #[error("{}", task_timeout_text(service, *seconds, state))]
    TaskTimeout {
        service: String,
        seconds: u64,
        state: String,
    },
    #[error("the image of service {service} already runs its own /forgexec (task state {state}); forge-launch cannot inject the executor into it")]
    ImageHasForgexec { service: String, state: String },
    #[error("node {node}: {reason}")]
    NodeAccess { node: String, reason: String },
    /// The node running the build went down before it ended.
    #[error("{}", super::watch::lost_text(node))]
    NodeLost {
        /// Its host name (or id).
        node: String,
        node_id: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("local mode: {0}")]
    Git(#[from] GitError),
    #[error("local mode: interrupted; the container was removed")]
    Interrupted,
    #[error(transparent)]
    Binary(#[from] super::binary::BinaryError),
}

impl From<crate::fsread::FsReadError> for LaunchError {
    fn from(err: crate::fsread::FsReadError) -> Self {
        use crate::fsread::FsReadError;
        match err {
            FsReadError::Open { path, source } | FsReadError::Read { path, source } => {
                LaunchError::Read { path, source }
            }
            refused => LaunchError::Refused(refused),
        }
    }
}

impl From<ForgeError> for LaunchError {
    fn from(err: ForgeError) -> Self {
        LaunchError::Forge(Box::new(err))
    }
}

impl LaunchError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Read { .. }
            | LaunchError::Refused(_)
            | LaunchError::Event { .. }
            | LaunchError::MissingFact { .. }
            | LaunchError::Flag { .. }
            | LaunchError::Facts(_)
            | LaunchError::Spec(_)
            | LaunchError::NoSpec { .. }
            | LaunchError::UnknownAction { .. }
            | LaunchError::NoImage { .. }
            | LaunchError::OverLimit { .. } => exit::INVALID,
            LaunchError::Git(GitError::NotARepository { .. } | GitError::NoSuchCommit { .. }) => {
                exit::INVALID
            }
            LaunchError::Binary(e) => e.exit_code(),
            _ => exit::INFRASTRUCTURE,
        }
    }

    /// The common causes said plainly, for a commit status's few words
    /// (`None`: the error as it is).
    pub fn plain_cause(&self) -> Option<String> {
        let LaunchError::TaskFailed { node, err, .. } = self else {
            return None;
        };
        let image = err.split("No such image: ").nth(1)?;
        let on = if node.is_empty() {
            String::new()
        } else {
            format!(" on {node}")
        };
        Some(format!(
            "image `{}` not found{on} (No such image)",
            image.trim()
        ))
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

/// A task still pending is queued: no node can take it now (the swarm is
/// the queue). Said so, with the swarm's reason, rather than as a hang.
fn task_timeout_text(service: &str, seconds: u64, state: &str) -> String {
    match state.strip_prefix("pending") {
        Some(reason) => {
            let reason = reason.trim_start_matches(':').trim();
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(" (the swarm says: {reason})")
            };
            format!(
                "the build task of service {service} was still queued after {seconds}s: no node can take it{why}; no node satisfies the --constraint, has the reserved CPUs and memory free, or has the image's platform; the service was removed; free or add a node, or raise --start-timeout"
            )
        }
        None => format!(
            "timed out after {seconds}s waiting for the build task of service {service} to be placed (last state: {state}); raise --start-timeout or check `docker service ps {service}`"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_task_at_the_deadline_is_said_to_be_queued() {
        let err = LaunchError::TaskTimeout {
            service: "forge-o-r-1-x".into(),
            seconds: 5,
            state: "pending: no suitable node (scheduling constraints not satisfied on 1 node)"
                .into(),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("the build task of service forge-o-r-1-x was still queued after 5s: no node can take it (the swarm says: no suitable node (scheduling constraints not satisfied on 1 node))"),
            "{msg}"
        );
        assert!(msg.contains("--constraint"), "{msg}");
        assert!(
            !msg.contains("  "),
            "one line of text, no runs of blanks: {msg}"
        );
        let err = LaunchError::TaskTimeout {
            service: "s".into(),
            seconds: 5,
            state: "preparing".into(),
        };
        assert!(err.to_string().starts_with("timed out after 5s"));
    }

    #[test]
    fn a_missing_image_is_said_plainly_in_a_status() {
        let err = LaunchError::TaskFailed {
            service: "forge-o-r-1-x".into(),
            node: "node-2".into(),
            err: "No such image: ghcr.io/x/y:1".into(),
        };
        assert_eq!(
            err.plain_cause().unwrap(),
            "image `ghcr.io/x/y:1` not found on node-2 (No such image)"
        );
        // the full error keeps Docker's words
        assert!(err.to_string().contains("No such image: ghcr.io/x/y:1"));
    }
}
