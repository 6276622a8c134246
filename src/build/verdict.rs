//! How a build ended, before its final status is posted: passed, failed,
//! cancelled, or stopped by a typed [`BuildError`]; each maps to one commit
//! status state and one exit code.

use std::path::PathBuf;

use nix::sys::signal::Signal;

use crate::artifacts::ArtifactError;
use crate::exit;
use crate::forge::{ForgeError, StatusState};
use crate::http::HttpError;
use crate::spec::SpecError;
use crate::workspace::WorkspaceError;

/// What stopped a build other than its own commands. The message is the
/// final status's description (one line); [`BuildError::is_invalid_input`]
/// tells a pull request's mistake (exit 2) from infrastructure (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid .forge.yml: {}", spec_summary(.0))]
    Spec(#[source] Box<SpecError>),
    #[error("action `{action}` is not in .forge.yml (has: {})", .known.join(", "))]
    UnknownAction {
        action: String,
        known: Vec<String>,
        path: PathBuf,
    },
    #[error("cannot create the workspace {}: {source}", path.display())]
    Workspace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot fetch the source: {0}")]
    FetchSource(#[source] Box<ForgeError>),
    /// The source archive holds what a workspace must not (a path or link
    /// leading outside, more than a limit allows).
    #[error("unsafe source archive: {0}")]
    SourceRefused(#[source] Box<WorkspaceError>),
    #[error("cannot create the build log: {0}")]
    BuildLog(#[source] std::io::Error),
    #[error("FORGE_ARTIFACTS_URL: {0}")]
    ArtifactsUrl(#[source] Box<ArtifactError>),
    #[error("artifacts: {0}")]
    Artifacts(#[source] Box<ArtifactError>),
    #[error("the build log could not be uploaded")]
    LogUpload(#[source] Box<ArtifactError>),
    #[error("FORGE_CA_CERT: {0}")]
    CaCert(#[source] Box<HttpError>),
    #[error("{0}")]
    ServiceNotReady(#[source] crate::services::ServiceWaitError),
}

impl BuildError {
    /// A mistake of the pull request or the operator's input (exit 2), not
    /// a failure of the infrastructure (exit 3).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            BuildError::Spec(_)
                | BuildError::UnknownAction { .. }
                | BuildError::ArtifactsUrl(_)
                | BuildError::CaCert(_)
                | BuildError::SourceRefused(_)
        )
    }
}

/// `3:5: message (+2 more)`: the first diagnostic of a spec error.
fn spec_summary(err: &SpecError) -> String {
    let diagnostics = err.diagnostics();
    match diagnostics.first() {
        Some(d) if diagnostics.len() > 1 => format!(
            "{}:{}: {} (+{} more)",
            d.line,
            d.column,
            d.message,
            diagnostics.len() - 1
        ),
        Some(d) => format!("{}:{}: {}", d.line, d.column, d.message),
        None => err
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// How a build ended.
#[derive(Debug)]
pub enum Verdict {
    /// Every selected command passed; what ran, for the description.
    Passed(String),
    /// A command failed; which one and how.
    Failed(String),
    /// Something other than the commands stopped the build.
    Stopped(BuildError),
    /// A signal cancelled the build, during this command if one ran.
    Cancelled {
        signal: Signal,
        during: Option<String>,
    },
}

impl Verdict {
    pub fn state(&self) -> StatusState {
        match self {
            Verdict::Passed(_) => StatusState::Success,
            Verdict::Failed(_) => StatusState::Failure,
            Verdict::Stopped(_) | Verdict::Cancelled { .. } => StatusState::Error,
        }
    }

    /// The final status's description (not yet masked).
    pub fn description(&self) -> String {
        match self {
            Verdict::Passed(text) | Verdict::Failed(text) => text.clone(),
            Verdict::Stopped(err) => err.to_string(),
            Verdict::Cancelled { signal, during } => format!(
                "cancelled by {}{}",
                signal.as_str(),
                during
                    .as_deref()
                    .map(|d| format!(" during {d}"))
                    .unwrap_or_default()
            ),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Passed(_) => exit::PASSED,
            Verdict::Failed(_) => exit::FAILED,
            Verdict::Stopped(err) if err.is_invalid_input() => exit::INVALID,
            Verdict::Stopped(_) => exit::INFRASTRUCTURE,
            Verdict::Cancelled { signal, .. } => exit::cancelled(*signal),
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed(_))
    }

    /// A passed build that could not finish its own work (artifacts, the
    /// log) becomes an infrastructure error; any other verdict stands, so
    /// the first cause of a failure is the one reported.
    pub fn unless_passed_then(self, err: BuildError) -> Verdict {
        if self.passed() {
            Verdict::Stopped(err)
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verdict_has_its_state_and_exit_code() {
        let passed = Verdict::Passed("test: 1 command passed".into());
        assert_eq!(
            (passed.state(), passed.exit_code()),
            (StatusState::Success, 0)
        );
        let failed = Verdict::Failed("test: `false` exited 1".into());
        assert_eq!(
            (failed.state(), failed.exit_code()),
            (StatusState::Failure, 1)
        );
        let invalid = Verdict::Stopped(BuildError::UnknownAction {
            action: "lint".into(),
            known: vec!["execute".into(), "docs".into()],
            path: ".forge.yml".into(),
        });
        assert_eq!(
            (invalid.state(), invalid.exit_code()),
            (StatusState::Error, 2)
        );
        assert_eq!(
            invalid.description(),
            "action `lint` is not in .forge.yml (has: execute, docs)"
        );
        let broken = Verdict::Stopped(BuildError::BuildLog(std::io::Error::other("disk full")));
        assert_eq!(
            (broken.state(), broken.exit_code()),
            (StatusState::Error, 3)
        );
        let cancelled = Verdict::Cancelled {
            signal: Signal::SIGTERM,
            during: Some("test: `sleep 60`".into()),
        };
        assert_eq!(cancelled.exit_code(), 143);
        assert_eq!(
            cancelled.description(),
            "cancelled by SIGTERM during test: `sleep 60`"
        );
    }

    #[test]
    fn only_a_passed_build_is_turned_into_an_error_by_a_later_problem() {
        let later = || BuildError::LogUpload(Box::new(ArtifactError::Worker("gone".into())));
        let passed = Verdict::Passed("ok".into()).unless_passed_then(later());
        assert_eq!(passed.description(), "the build log could not be uploaded");
        assert_eq!(passed.exit_code(), 3);
        let failed = Verdict::Failed("test: `false` exited 1".into()).unless_passed_then(later());
        assert_eq!(failed.exit_code(), 1);
    }
}
