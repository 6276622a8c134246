//! Local builds on a developer's machine, through the same [`Build`] as CI:
//! `forgexec run` reproduces a CI run of the repository in a folder, and the
//! pre-push hook ([`hook`]) builds each pushed commit before it leaves. The
//! build facts come from the flags, then `FORGE_*`, then git (owner and
//! repository from the `origin` URL, else `local/<folder>`; the commit from
//! `HEAD`), validated by the same step as in CI; the source is the work
//! tree as it is, or with `--clean` (and always in the hook) a fresh
//! temporary checkout of the commit ([`git::CleanCheckout`]) that is removed
//! however the build ends. Statuses are only printed unless posting is asked
//! for, and artifacts go to `./forge-artifacts/` unless
//! `FORGE_ARTIFACTS_URL` says otherwise. These functions return outcomes;
//! the CLI prints them.

pub mod git;
pub mod hook;

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::build::plan::BuildPlan;
use crate::build::{Build, BuildError, BuildOptions, BuildOutcome, StageSelection};
use crate::exit;
use crate::facts::{self, var, BuildContext, FactProblem, FactsError, Mode, RawFacts, RepoName};
use crate::render::Renderer;
use crate::run::cancel::Cancellation;
use crate::run::Stage;
use crate::secret::Secret;
use git::{CleanCheckout, Git, GitError, GIT_REPO_VARS};

/// Folder (under the repository) local artifacts and build logs go to.
pub const ARTIFACTS_DIR: &str = "forge-artifacts";
/// The owner of a repository whose remote names none.
pub const LOCAL_OWNER: &str = "local";

/// What `forgexec run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The repository (any folder inside its work tree).
    pub dir: PathBuf,
    /// Stages to run; empty means all.
    pub stages: Vec<Stage>,
    /// Print what would run instead of running it.
    pub list: bool,
    /// Build a fresh temporary checkout of the commit, not the work tree.
    pub clean: bool,
    /// Post commit statuses (needs a token) instead of only printing them.
    pub post_statuses: bool,
    /// `--owner`, `--repo`, `--action`; `sha` holds `--sha`, any revision.
    pub flags: RawFacts,
}

/// What a local command produced.
pub enum RunOutcome {
    /// `--list`: the plan, nothing ran.
    Listed(Box<BuildPlan>),
    /// The build ran (or could not start) and ended like this.
    Built(BuildOutcome),
}

/// Why a local build could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("invalid build facts\n{0}")]
    Facts(FactsError),
    #[error("{source}")]
    Checkout {
        source: GitError,
        /// The signal that interrupted the checkout, if one did.
        cancelled: Option<Signal>,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Plan(Box<BuildError>),
}

impl LocalError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Facts(_) => exit::INVALID,
            LocalError::Checkout {
                cancelled: Some(signal),
                ..
            } => exit::cancelled(*signal),
            LocalError::Checkout {
                source: GitError::NoSuchCommit { .. } | GitError::NotARepository { .. },
                ..
            } => exit::INVALID,
            LocalError::Plan(err) if err.is_invalid_input() => exit::INVALID,
            LocalError::Checkout { .. } | LocalError::Signals(_) | LocalError::Plan(_) => {
                exit::INFRASTRUCTURE
            }
        }
    }
}

/// `forgexec run`: builds (or lists) the repository in `options.dir`.
pub fn run(options: &RunOptions) -> Result<RunOutcome, LocalError> {
    let git = Git::new(&options.dir);
    let facts = resolve_facts(&git, &options.flags, RawFacts::from_env(), None)?;
    // Signals are caught from here on: a Ctrl-C during the checkout or the
    // build ends in the normal way out, which removes the temporary tree.
    let cancel = Cancellation::from_signals(facts::DEFAULT_GRACE).map_err(LocalError::Signals)?;
    let checkout = match options.clean {
        true => Some(clean_checkout(&git, &facts.raw, &cancel)?),
        false => None,
    };
    let workspace = match &checkout {
        Some(checkout) => checkout.path().to_path_buf(),
        None => facts.toplevel.clone(),
    };
    let artifacts_default = facts.toplevel.join(ARTIFACTS_DIR);
    let (ctx, token) = local_context(
        &facts,
        &workspace,
        Some(&artifacts_default),
        options.post_statuses,
    )
    .map_err(LocalError::Facts)?;
    let build = Build::new(ctx, token, cancel.clone(), command_env()).with_options(BuildOptions {
        stages: StageSelection::only(&options.stages),
        progress: None,
        fetch_missing_source: false,
        // Nothing started the services here: no wrapper to ask.
        service_logs: false,
        // Earlier local runs' output is no artifact of this one.
        artifact_excludes: vec![format!("{ARTIFACTS_DIR}/**")],
    });
    if let Some(note) = &facts.note {
        Renderer::default().say(&format!("forgexec run: {note}"));
    }
    if options.list {
        return build
            .plan()
            .map(|plan| RunOutcome::Listed(Box::new(plan)))
            .map_err(|err| LocalError::Plan(Box::new(err)));
    }
    let ctx = build.context();
    Renderer::default().say(&format!(
        "forgexec run: {}/{} at {} in {}{}; statuses are {}",
        ctx.owner,
        ctx.repo,
        ctx.sha.short(),
        ctx.workspace.display(),
        if checkout.is_some() {
            " (clean checkout, removed afterwards)"
        } else {
            " (the work tree as it is; --clean builds the commit alone)"
        },
        if ctx.status_url.is_some() {
            "posted"
        } else {
            "printed, not posted (--post-statuses posts them)"
        }
    ));
    let outcome = build.run_outcome();
    drop(checkout);
    Ok(RunOutcome::Built(outcome))
}

fn clean_checkout(
    git: &Git,
    raw: &RawFacts,
    cancel: &Cancellation,
) -> Result<CleanCheckout, LocalError> {
    let sha = raw.sha.as_deref().unwrap_or_default();
    CleanCheckout::create(git, sha).map_err(|source| LocalError::Checkout {
        source,
        cancelled: cancel.signal(),
    })
}

/// The facts of one local build, before validation.
#[derive(Debug, Clone)]
pub struct LocalFacts {
    /// Flags over `FORGE_*` over git; the commit resolved to its full id.
    pub raw: RawFacts,
    /// The work tree's top folder (the folder itself when not in git).
    pub toplevel: PathBuf,
    /// Said to the developer when git named no owner.
    pub note: Option<String>,
}

/// Owner, repository and commit: a flag, else `FORGE_*`, else git (the
/// `origin` URL, else `fallback_url`, else `local/<folder>`; `HEAD`). A
/// `--sha` that git cannot resolve is reported by variable with its fix.
pub fn resolve_facts(
    git: &Git,
    flags: &RawFacts,
    env: RawFacts,
    fallback_url: Option<&str>,
) -> Result<LocalFacts, LocalError> {
    let toplevel = git.toplevel().unwrap_or_else(|_| git.dir().to_path_buf());
    let toplevel = toplevel.canonicalize().unwrap_or(toplevel);
    let mut problems = Vec::new();

    // The commit: a flag may name any revision; FORGE_SHA is taken as is.
    let sha = match (&flags.sha, &env.sha) {
        (Some(rev), _) => match git.commit(rev) {
            Ok(sha) => Some(sha),
            Err(_) if facts::CommitId::is_valid(rev) => Some(rev.clone()),
            Err(err) => {
                problems.push(FactProblem {
                    variable: var::SHA,
                    problem: format!("--sha {rev}: {err}"),
                    fix: "name a commit of this repository (`HEAD~1`, a branch, an id)".into(),
                });
                None
            }
        },
        (None, Some(sha)) => Some(sha.clone()),
        (None, None) => match git.commit("HEAD") {
            Ok(sha) => Some(sha),
            Err(err) => {
                problems.push(FactProblem {
                    variable: var::SHA,
                    problem: format!("is not set and HEAD is not a commit: {err}"),
                    fix: "commit first, pass --sha, or set FORGE_SHA".into(),
                });
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(LocalError::Facts(FactsError { problems }));
    }

    let origin = git.remote_url("origin");
    let named = origin
        .as_deref()
        .and_then(git::parse_remote_url)
        .or_else(|| fallback_url.and_then(git::parse_remote_url));
    let (from_git, note) = match named {
        Some((owner, repo)) => ((owner, repo), None),
        None => {
            let repo = folder_repo_name(&toplevel);
            let why = match &origin {
                Some(url) => format!("the origin URL `{url}` names no owner"),
                None => "there is no `origin` remote".to_string(),
            };
            let note = format!(
                "{why}: building as {LOCAL_OWNER}/{repo} (pass --owner/--repo or set FORGE_OWNER/FORGE_REPO to name it)"
            );
            ((LOCAL_OWNER.to_string(), repo), Some(note))
        }
    };
    let git_facts = RawFacts {
        owner: Some(from_git.0),
        repo: Some(from_git.1),
        sha,
        ..RawFacts::default()
    };
    let flags = RawFacts {
        sha: None,
        ..flags.clone()
    };
    let owner_flag = flags.owner.is_some();
    let raw = flags.or(RawFacts { sha: None, ..env }).or(git_facts);
    let note = note.filter(|_| !owner_flag && raw.owner.as_deref() == Some(LOCAL_OWNER));
    Ok(LocalFacts {
        raw,
        toplevel,
        note,
    })
}

/// The [`BuildContext`] of a local build, validated by the same code as in
/// CI, and the token. Differences from CI: the workspace is the local tree;
/// statuses go nowhere unless `post_statuses` (then to `FORGE_STATUS_URL`
/// or the commit's statuses on the forge, which needs a token); a token file
/// is read but never deleted (it is the developer's), and `/forge/token` is
/// not looked for.
pub fn local_context(
    facts: &LocalFacts,
    workspace: &Path,
    artifacts_default: Option<&Path>,
    post_statuses: bool,
) -> Result<(BuildContext, Option<Secret>), FactsError> {
    let mut raw = facts.raw.clone();
    raw.workspace = Some(workspace.display().to_string());
    if !post_statuses {
        raw.status_url = None;
    }
    if raw.artifacts_url.is_none() {
        raw.artifacts_url = artifacts_default.map(|dir| format!("file://{}", dir.display()));
    }
    let mut ctx = facts::validate(&raw, Mode::Local, Path::exists)?;
    let token = ctx.take_token().map_err(|err| FactsError {
        problems: vec![FactProblem {
            variable: var::TOKEN_FILE,
            problem: err.to_string(),
            fix: "point it at a readable file holding the token, or unset it".into(),
        }],
    })?;
    if post_statuses {
        if token.is_none() {
            return Err(FactsError {
                problems: vec![FactProblem {
                    variable: var::TOKEN,
                    problem: "--post-statuses needs a token and none is set".into(),
                    fix: "set FORGE_TOKEN or FORGE_TOKEN_FILE to a token that may post commit statuses, or drop --post-statuses".into(),
                }],
            });
        }
        if ctx.status_url.is_none() {
            ctx.status_url = Some(facts::default_status_url(
                &ctx.api_url,
                &ctx.owner,
                &ctx.repo,
                &ctx.sha,
            ));
        }
    }
    Ok((ctx, token))
}

/// The environment local build commands start from: forgexec's own,
/// without what git exports to hooks (it would point their git commands
/// at the developer's repository instead of the checkout).
pub fn command_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| !GIT_REPO_VARS.iter().any(|g| k == g))
        .collect()
}

/// The repository's folder name, made a valid repository name.
pub fn folder_repo_name(toplevel: &Path) -> String {
    let name: String = toplevel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name: String = name.chars().take(100).collect();
    if RepoName::is_valid(&name) {
        name
    } else {
        "repository".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_become_repository_names() {
        assert_eq!(folder_repo_name(Path::new("/src/hello")), "hello");
        assert_eq!(folder_repo_name(Path::new("/src/my app")), "my-app");
        assert_eq!(folder_repo_name(Path::new("/src/..")), "repository");
        assert_eq!(folder_repo_name(Path::new("/")), "repository");
    }

    #[test]
    fn a_bad_commit_is_an_invalid_input_and_a_signal_wins() {
        let err = LocalError::Checkout {
            source: GitError::NoSuchCommit {
                rev: "nope".into(),
                dir: "/r".into(),
            },
            cancelled: None,
        };
        assert_eq!(err.exit_code(), exit::INVALID);
        let err = LocalError::Checkout {
            source: GitError::Temp(std::io::Error::other("interrupted")),
            cancelled: Some(Signal::SIGINT),
        };
        assert_eq!(err.exit_code(), 130);
    }
}
