//! The git pre-push hook. [`install`] writes a small `pre-push` script into
//! the folder git takes hooks from (`core.hooksPath`, or the repository's
//! `hooks`, shared by its worktrees) that runs the installing forgexec; a
//! hook already there is kept and run first (chained), and replacing it
//! takes `--force`, which still keeps it aside. [`pre_push`] is what the
//! script runs: it reads git's `<local ref> <local sha> <remote ref> <remote
//! sha>` lines and builds each pushed commit once (setup and test) in a
//! clean temporary checkout, never the work tree, refusing the push at the
//! first failure with the commit, the command and its full output.

use std::fs;
use std::io::{self, BufRead};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::git::{CleanCheckout, Git, GitError};
use super::{local_context, resolve_facts, LocalError};
use crate::build::{Build, BuildOptions, BuildOutcome, StageSelection};
use crate::exit;
use crate::facts::{self, RawFacts};
use crate::render::Renderer;
use crate::run::cancel::Cancellation;

/// Marks a hook as forgexec's (so it is updated and removed, never others).
pub const MARKER: &str = "# forgexec pre-push hook";
/// Name a chained (previously installed) hook is kept under.
pub const CHAINED: &str = "pre-push.forgexec-chained";
/// Name a hook replaced with `--force` is kept under.
pub const BACKUP: &str = "pre-push.forgexec-backup";
/// Skips the hook when set to `1` (or `true`, `yes`).
pub const SKIP_VAR: &str = "FORGE_SKIP_HOOK";

/// Installing or removing the hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "a pre-push hook is already installed at {} and cannot be chained: {reason}\n  \
         help: rerun with --force to replace it (it is kept as {BACKUP})",
        path.display()
    )]
    CannotChain { path: PathBuf, reason: String },
    #[error(
        "the pre-push hook at {} was not installed by forgexec; it is left alone\n  \
         help: remove it yourself if it should go",
        path.display()
    )]
    NotOurs { path: PathBuf },
    #[error("cannot tell which forgexec is running: {0}")]
    CurrentExe(#[source] io::Error),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> HookError {
    let path = path.to_path_buf();
    move |source| HookError::Io { what, path, source }
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub hook: PathBuf,
    /// An earlier forgexec hook was rewritten (for the current binary).
    pub updated: bool,
    /// A foreign hook now runs first from here.
    pub chained: Option<PathBuf>,
    /// A foreign hook replaced with `--force` was kept here.
    pub backup: Option<PathBuf>,
}

/// Writes the pre-push hook for the repository around `dir`, running
/// `forgexec` (an absolute path).
pub fn install(dir: &Path, forgexec: &Path, force: bool) -> Result<Installed, HookError> {
    let git = Git::new(dir);
    git.toplevel()?;
    let hooks = git.hooks_dir()?;
    fs::create_dir_all(&hooks).map_err(io_error("create the hooks folder", &hooks))?;
    let hook = hooks.join("pre-push");
    let chained_path = hooks.join(CHAINED);
    let mut report = Installed {
        hook: hook.clone(),
        updated: false,
        chained: None,
        backup: None,
    };
    if fs::symlink_metadata(&hook).is_ok() {
        if is_ours(&hook) {
            report.updated = true;
        } else if force {
            let backup = free_name(&hooks.join(BACKUP));
            fs::rename(&hook, &backup).map_err(io_error("move aside", &hook))?;
            report.backup = Some(backup);
        } else {
            let reason = if fs::symlink_metadata(&chained_path).is_ok() {
                Some(format!("{} already exists", chained_path.display()))
            } else if !hook.is_file() {
                Some("it is not a file (or a link to one)".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(HookError::CannotChain {
                    path: hook.clone(),
                    reason,
                });
            }
            fs::rename(&hook, &chained_path).map_err(io_error("move aside", &hook))?;
            report.chained = Some(chained_path);
        }
    }
    let staging = hooks.join(".pre-push.forgexec-new");
    fs::write(&staging, script(forgexec)).map_err(io_error("write", &staging))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
        .map_err(io_error("make executable", &staging))?;
    fs::rename(&staging, &hook).map_err(io_error("write", &hook))?;
    Ok(report)
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uninstalled {
    /// There was no pre-push hook.
    NotInstalled { hook: PathBuf },
    /// Removed; a chained hook, if any, is back in place.
    Removed {
        hook: PathBuf,
        restored: Option<PathBuf>,
    },
}

/// Removes forgexec's pre-push hook, putting back the hook it chained.
pub fn uninstall(dir: &Path) -> Result<Uninstalled, HookError> {
    let git = Git::new(dir);
    git.toplevel()?;
    let hooks = git.hooks_dir()?;
    let hook = hooks.join("pre-push");
    if fs::symlink_metadata(&hook).is_err() {
        return Ok(Uninstalled::NotInstalled { hook });
    }
    if !is_ours(&hook) {
        return Err(HookError::NotOurs { path: hook });
    }
    fs::remove_file(&hook).map_err(io_error("remove", &hook))?;
    let chained = hooks.join(CHAINED);
    let restored = if fs::symlink_metadata(&chained).is_ok() {
        fs::rename(&chained, &hook).map_err(io_error("restore", &chained))?;
        Some(chained)
    } else {
        None
    };
    Ok(Uninstalled::Removed { hook, restored })
}

fn is_ours(hook: &Path) -> bool {
    fs::read(hook)
        .map(|bytes| String::from_utf8_lossy(&bytes).contains(MARKER))
        .unwrap_or(false)
}

/// `path`, or `path.1`, `path.2`... whichever does not exist yet.
fn free_name(path: &Path) -> PathBuf {
    let mut candidate = path.to_path_buf();
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = PathBuf::from(format!("{}.{n}", path.display()));
        n += 1;
    }
    candidate
}

/// The hook script: runs the chained hook first (with the same input),
/// then `forgexec hook pre-push`.
pub fn script(forgexec: &Path) -> String {
    let exe = shell_single_quote(&forgexec.display().to_string());
    format!(
        r#"#!/bin/sh
{MARKER}: builds each pushed commit (setup and test of .forge.yml)
# in a clean temporary checkout and refuses the push when it fails.
# Installed by `forgexec hook install`; removed by `forgexec hook uninstall`.
# Skip it once with `git push --no-verify` or {SKIP_VAR}=1.
FORGEXEC={exe}
if [ ! -x "$FORGEXEC" ]; then
    echo "forgexec pre-push: $FORGEXEC is gone; reinstall the hook (forgexec hook install) or push with --no-verify" >&2
    exit 1
fi
chained="$(dirname "$0")/{CHAINED}"
if [ -f "$chained" ]; then
    input=$(cat)
    if [ -x "$chained" ]; then
        printf '%s\n' "$input" | "$chained" "$@" || exit $?
    fi
    printf '%s\n' "$input" | "$FORGEXEC" hook pre-push "$@"
    exit $?
fi
exec "$FORGEXEC" hook pre-push "$@"
"#
    )
}

fn shell_single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One line git gives a pre-push hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    pub local_ref: String,
    pub local_sha: String,
    pub remote_ref: String,
    pub remote_sha: String,
}

impl PushedRef {
    /// A deletion pushes no commit (`git push origin :branch`).
    pub fn is_deletion(&self) -> bool {
        self.local_sha.bytes().all(|b| b == b'0')
    }
}

/// Most input the hook reads from git (a push of thousands of refs fits).
pub const MAX_INPUT_BYTES: u64 = 4 << 20;

/// git's pre-push input could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum PushInputError {
    #[error("cannot read the refs from stdin: {0}")]
    Read(#[source] io::Error),
    #[error("stdin line {line}: expected `<local ref> <local sha> <remote ref> <remote sha>`, got `{text}`")]
    Malformed { line: usize, text: String },
    #[error("stdin: more than {MAX_INPUT_BYTES} bytes of refs; git never sends that many")]
    TooLong,
}

/// Parses git's pre-push input; blank lines are skipped.
pub fn parse_pushed_refs(input: impl BufRead) -> Result<Vec<PushedRef>, PushInputError> {
    let mut input = input.take(MAX_INPUT_BYTES + 1);
    let mut refs = Vec::new();
    let mut line = String::new();
    let mut read = 0u64;
    for number in 1.. {
        line.clear();
        let n = input.read_line(&mut line).map_err(PushInputError::Read)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > MAX_INPUT_BYTES {
            return Err(PushInputError::TooLong);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            [local_ref, local_sha, remote_ref, remote_sha] => refs.push(PushedRef {
                local_ref: local_ref.to_string(),
                local_sha: local_sha.to_string(),
                remote_ref: remote_ref.to_string(),
                remote_sha: remote_sha.to_string(),
            }),
            _ => {
                return Err(PushInputError::Malformed {
                    line: number,
                    text: line.trim_end_matches(['\n', '\r']).to_string(),
                })
            }
        }
    }
    Ok(refs)
}

/// The commits to build, each once, in push order, with the refs that
/// push it (deletions push nothing).
pub fn commits_to_build(refs: &[PushedRef]) -> Vec<(String, Vec<String>)> {
    let mut commits: Vec<(String, Vec<String>)> = Vec::new();
    for pushed in refs.iter().filter(|r| !r.is_deletion()) {
        match commits.iter_mut().find(|(sha, _)| *sha == pushed.local_sha) {
            Some((_, names)) => names.push(pushed.remote_ref.clone()),
            None => commits.push((pushed.local_sha.clone(), vec![pushed.remote_ref.clone()])),
        }
    }
    commits
}

/// What the hook decided.
#[derive(Debug)]
pub enum PrePush {
    /// Every pushed commit passed (or the push builds none).
    Passed,
    /// `FORGE_SKIP_HOOK` is set to this value.
    Skipped(String),
    /// This commit failed: the push is refused.
    Refused {
        sha: String,
        refs: Vec<String>,
        outcome: BuildOutcome,
    },
}

impl PrePush {
    /// 0 lets the push go.
    pub fn exit_code(&self) -> u8 {
        match self {
            PrePush::Passed | PrePush::Skipped(_) => exit::PASSED,
            PrePush::Refused { outcome, .. } => outcome.exit_code,
        }
    }
}

/// Why the hook could not decide.
#[derive(Debug, thiserror::Error)]
pub enum PrePushError {
    #[error(transparent)]
    Input(#[from] PushInputError),
    #[error("{0}")]
    Local(#[from] LocalError),
    #[error("cancelled by {}", .0.as_str())]
    Cancelled(Signal),
}

impl PrePushError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PrePushError::Input(_) => exit::INVALID,
            PrePushError::Local(err) => err.exit_code(),
            PrePushError::Cancelled(signal) => exit::cancelled(*signal),
        }
    }
}

/// `forgexec hook pre-push REMOTE URL`: builds each pushed commit (setup
/// and test) in a clean checkout, stopping at the first that fails.
pub fn pre_push(
    dir: &Path,
    remote: &str,
    url: &str,
    input: impl BufRead,
) -> Result<PrePush, PrePushError> {
    let refs = parse_pushed_refs(input)?;
    if let Ok(value) = std::env::var(SKIP_VAR) {
        if matches!(value.trim(), "1" | "true" | "yes") {
            return Ok(PrePush::Skipped(value));
        }
    }
    let commits = commits_to_build(&refs);
    if commits.is_empty() {
        return Ok(PrePush::Passed);
    }
    let git = Git::new(dir);
    let cancel = Cancellation::from_signals(facts::DEFAULT_GRACE).map_err(LocalError::Signals)?;
    let console = Renderer::default();
    for (sha, refs) in commits {
        if let Some(signal) = cancel.signal() {
            return Err(PrePushError::Cancelled(signal));
        }
        let label = format!("forgexec pre-push: {}", short(&sha));
        console.say(&format!(
            "{label} ({} on {remote}): building in a clean checkout",
            refs.join(", ")
        ));
        let outcome = build_pushed_commit(&git, &sha, url, &label, &cancel)?;
        if outcome.exit_code != exit::PASSED {
            return Ok(PrePush::Refused { sha, refs, outcome });
        }
        console.say(&format!("{label}: ok"));
    }
    Ok(PrePush::Passed)
}

/// One pushed commit, built in a clean checkout; checks only: no statuses,
/// no uploads.
fn build_pushed_commit(
    git: &Git,
    sha: &str,
    url: &str,
    label: &str,
    cancel: &Cancellation,
) -> Result<BuildOutcome, LocalError> {
    let flags = RawFacts {
        sha: Some(sha.to_string()),
        ..RawFacts::default()
    };
    let facts = resolve_facts(git, &flags, RawFacts::from_env(), Some(url))?;
    let checkout = CleanCheckout::create(git, sha).map_err(|source| LocalError::Checkout {
        source,
        cancelled: cancel.signal(),
    })?;
    let (mut ctx, token) =
        local_context(&facts, checkout.path(), None, false).map_err(LocalError::Facts)?;
    ctx.status_url = None;
    ctx.artifacts_url = None;
    let build =
        Build::new(ctx, token, cancel.clone(), super::command_env()).with_options(BuildOptions {
            stages: StageSelection {
                setup: true,
                test: true,
                artifacts: false,
            },
            progress: Some(label.to_string()),
            fetch_missing_source: false,
            // Nothing started the services here: no wrapper to ask.
            service_logs: false,
            artifact_excludes: Vec::new(),
        });
    let outcome = build.run_outcome();
    drop(checkout);
    Ok(outcome)
}

/// The first 7 characters of a commit id, as git shows it.
fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn each_commit_is_built_once_and_deletions_not_at_all() {
        let input = format!(
            "refs/heads/main {A} refs/heads/main {B}\n\
             \n\
             refs/heads/topic {A} refs/heads/topic {ZERO}\n\
             (delete) {ZERO} refs/heads/old {B}\n\
             refs/heads/other {B} refs/heads/other {ZERO}\n"
        );
        let refs = parse_pushed_refs(input.as_bytes()).unwrap();
        assert_eq!(refs.len(), 4);
        assert!(refs[2].is_deletion());
        assert_eq!(
            commits_to_build(&refs),
            vec![
                (
                    A.to_string(),
                    vec![
                        "refs/heads/main".to_string(),
                        "refs/heads/topic".to_string()
                    ]
                ),
                (B.to_string(), vec!["refs/heads/other".to_string()]),
            ]
        );
    }

    #[test]
    fn a_malformed_line_is_reported_with_its_number() {
        let err = parse_pushed_refs(format!("refs/heads/main {A}\n").as_bytes()).unwrap_err();
        assert!(
            err.to_string().starts_with("stdin line 1: expected"),
            "{err}"
        );
    }

    #[test]
    fn the_script_quotes_the_binary_path() {
        let text = script(Path::new("/opt/it's here/forgexec"));
        assert!(
            text.contains(r"FORGEXEC='/opt/it'\''s here/forgexec'"),
            "{text}"
        );
        assert!(text.contains(MARKER));
    }
}
