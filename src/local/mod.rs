//! Local builds on a developer's machine, through the same [`Build`] as CI:
//! `forgexec run` reproduces a CI run of the repository in a folder, and the
//! pre-push hook ([`hook`]) builds each pushed commit before it leaves. The
//! build facts come from git when `FORGE_*` does not give them (owner and
//! repository from the `origin` URL, the commit from `HEAD`), flags winning
//! over both; the source is the work tree as it is, or with `--clean` (and
//! always in the hook) a fresh temporary checkout of the commit
//! ([`git::CleanCheckout`]) that is removed however the build ends.
//! Statuses are only printed unless posting is asked for, and artifacts go
//! to `./forge-artifacts/` unless `FORGE_ARTIFACTS_URL` says otherwise.

pub mod git;
pub mod hook;

use std::path::{Path, PathBuf};

use crate::build::{exit, Build, BuildOptions, StageSelection};
use crate::context::{BuildContext, ContextError, TokenSource, VarProblem};
use crate::run::cancel::Cancellation;
use crate::run::Stage;
use crate::secret::Secret;
use git::{CleanCheckout, Git, GIT_REPO_VARS};

/// Folder (under the repository) local artifacts and build logs go to.
pub const ARTIFACTS_DIR: &str = "forge-artifacts";

/// What `forgexec run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The repository (any folder inside its work tree).
    pub dir: PathBuf,
    pub action: Option<String>,
    /// Stages to run; empty means all.
    pub stages: Vec<Stage>,
    /// Print what would run instead of running it.
    pub list: bool,
    /// Build a fresh temporary checkout of the commit, not the work tree.
    pub clean: bool,
    /// Post commit statuses (needs a token) instead of only printing them.
    pub post_statuses: bool,
    pub owner: Option<String>,
    pub repo: Option<String>,
    /// A commit (`HEAD~1`, a branch, a full id); default `HEAD`.
    pub sha: Option<String>,
}

/// Explicit build facts that win over `FORGE_*` and git.
#[derive(Debug, Clone, Default)]
pub struct FactOverrides {
    pub owner: Option<String>,
    pub repo: Option<String>,
    pub sha: Option<String>,
    pub action: Option<String>,
}

/// `forgexec run`: returns the exit code, the same ones as in CI.
pub fn run(options: &RunOptions) -> u8 {
    let git = Git::new(&options.dir);
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let overrides = FactOverrides {
        owner: options.owner.clone(),
        repo: options.repo.clone(),
        sha: options.sha.clone(),
        action: options.action.clone(),
    };
    let facts = match resolve_facts(&git, &vars, &overrides, None) {
        Ok(facts) => facts,
        Err(err) => {
            eprintln!("forgexec run: invalid build facts\n{err}");
            return exit::INVALID;
        }
    };
    // Signals are caught from here on: a Ctrl-C during the checkout or the
    // build ends in the normal way out, which removes the temporary tree.
    let cancel = match Cancellation::from_signals(crate::context::DEFAULT_GRACE) {
        Ok(cancel) => cancel,
        Err(err) => {
            eprintln!("forgexec: cannot install signal handlers: {err}");
            return exit::INFRASTRUCTURE;
        }
    };
    let checkout = if options.clean {
        match CleanCheckout::create(&git, &facts.sha) {
            Ok(checkout) => Some(checkout),
            Err(err) => {
                eprintln!("forgexec run: {err}");
                let code = match err {
                    git::GitError::NoSuchCommit { .. } | git::GitError::NotARepository { .. } => {
                        exit::INVALID
                    }
                    _ => exit::INFRASTRUCTURE,
                };
                return cancelled_or(&cancel, code);
            }
        }
    } else {
        None
    };
    let workspace = match &checkout {
        Some(checkout) => checkout.path().to_path_buf(),
        None => facts.toplevel.clone(),
    };
    let artifacts_default = facts.toplevel.join(ARTIFACTS_DIR);
    let request = ContextRequest {
        facts: &facts,
        vars,
        workspace: &workspace,
        artifacts_default: Some(&artifacts_default),
        post_statuses: options.post_statuses,
    };
    let (ctx, token) = match local_context(request) {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("forgexec run: invalid build environment\n{err}");
            return exit::INVALID;
        }
    };
    let build = Build::new(ctx, token, cancel.clone(), command_env()).with_options(BuildOptions {
        stages: StageSelection::only(&options.stages),
        progress: None,
        fetch_missing_source: false,
        // Earlier local runs' output is no artifact of this one.
        artifact_excludes: vec![format!("{ARTIFACTS_DIR}/**")],
    });
    if options.list {
        return build.list(&mut std::io::stdout());
    }
    let ctx = build.context();
    eprintln!(
        "forgexec run: {}/{} at {} in {}{}; statuses are {}",
        ctx.owner,
        ctx.repo,
        short(&ctx.sha),
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
    );
    let code = build.run();
    drop(checkout);
    code
}

/// Build facts resolved for one local build.
#[derive(Debug, Clone)]
pub struct Facts {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    pub action: Option<String>,
    /// The work tree's top folder (the folder itself when not in git).
    pub toplevel: PathBuf,
}

/// Owner, repository and commit: a flag, else `FORGE_*`, else git (the
/// `origin` URL, else `fallback_url`; `HEAD`). Every fact that cannot be
/// found is reported by variable with its fix.
pub fn resolve_facts(
    git: &Git,
    vars: &[(String, String)],
    overrides: &FactOverrides,
    fallback_url: Option<&str>,
) -> Result<Facts, ContextError> {
    let var = |name: &str| {
        vars.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let toplevel = git.toplevel();
    let mut problems = Vec::new();

    let origin = git.remote_url("origin");
    let from_url = origin
        .as_deref()
        .and_then(git::parse_remote_url)
        .or_else(|| fallback_url.and_then(git::parse_remote_url));
    let url_note = match &origin {
        Some(url) => format!("the origin URL `{url}` names none"),
        None => "there is no `origin` remote".to_string(),
    };
    let mut pick = |flag: &Option<String>, variable: &'static str, from_git: Option<String>| {
        let value = flag.clone().or_else(|| var(variable)).or(from_git);
        if value.is_none() {
            let option = variable.trim_start_matches("FORGE_").to_ascii_lowercase();
            problems.push(VarProblem {
                variable,
                problem: format!("is not set and {url_note}"),
                fix: format!(
                    "pass --{option}, set {variable}, or add an origin remote \
                     (`git remote add origin https://github.com/OWNER/REPO.git`)"
                ),
            });
        }
        value
    };
    let owner = pick(
        &overrides.owner,
        "FORGE_OWNER",
        from_url.as_ref().map(|p| p.0.clone()),
    );
    let repo = pick(
        &overrides.repo,
        "FORGE_REPO",
        from_url.as_ref().map(|p| p.1.clone()),
    );

    // The commit: a flag may name any revision; FORGE_SHA is taken as is.
    let sha = match (&overrides.sha, var("FORGE_SHA")) {
        (Some(rev), _) => match git.commit(rev) {
            Ok(sha) => Some(sha),
            Err(_) if is_full_sha(rev) => Some(rev.clone()),
            Err(err) => {
                problems.push(VarProblem {
                    variable: "FORGE_SHA",
                    problem: format!("--sha {rev}: {err}"),
                    fix: "name a commit of this repository (`HEAD~1`, a branch, an id)".into(),
                });
                None
            }
        },
        (None, Some(sha)) => Some(sha),
        (None, None) => match git.commit("HEAD") {
            Ok(sha) => Some(sha),
            Err(err) => {
                problems.push(VarProblem {
                    variable: "FORGE_SHA",
                    problem: format!("is not set and HEAD is not a commit: {err}"),
                    fix: "commit first, pass --sha, or set FORGE_SHA".into(),
                });
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(ContextError { problems });
    }
    let toplevel = toplevel.unwrap_or_else(|_| git.dir().to_path_buf());
    let toplevel = toplevel.canonicalize().unwrap_or(toplevel);
    Ok(Facts {
        owner: owner.unwrap_or_default(),
        repo: repo.unwrap_or_default(),
        sha: sha.unwrap_or_default(),
        action: overrides.action.clone().or_else(|| var("FORGE_ACTION")),
        toplevel,
    })
}

/// Everything [`local_context`] needs.
pub struct ContextRequest<'a> {
    pub facts: &'a Facts,
    /// The process environment.
    pub vars: Vec<(String, String)>,
    pub workspace: &'a Path,
    /// Artifact folder when `FORGE_ARTIFACTS_URL` is unset; `None`: none.
    pub artifacts_default: Option<&'a Path>,
    pub post_statuses: bool,
}

/// The [`BuildContext`] of a local build, validated by the same code as in
/// CI, and the token. Differences from CI: the workspace is the local tree;
/// statuses go nowhere unless `post_statuses` (then to `FORGE_STATUS_URL`
/// or the commit's statuses on the forge, which needs a token); a token file
/// is read but never deleted (it is the developer's), and `/forge/token` is
/// not looked for.
pub fn local_context(
    request: ContextRequest<'_>,
) -> Result<(BuildContext, Option<Secret>), ContextError> {
    let facts = request.facts;
    let token_file = request
        .vars
        .iter()
        .find(|(k, v)| k == "FORGE_TOKEN_FILE" && !v.is_empty())
        .map(|(_, v)| PathBuf::from(v));
    let mut vars: Vec<(String, String)> = request
        .vars
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "FORGE_OWNER"
                    | "FORGE_REPO"
                    | "FORGE_SHA"
                    | "FORGE_ACTION"
                    | "FORGE_WORKSPACE"
                    | "FORGE_TOKEN_FILE"
            )
        })
        .collect();
    if !request.post_statuses {
        vars.retain(|(k, _)| k != "FORGE_STATUS_URL");
    }
    vars.push(("FORGE_OWNER".into(), facts.owner.clone()));
    vars.push(("FORGE_REPO".into(), facts.repo.clone()));
    vars.push(("FORGE_SHA".into(), facts.sha.clone()));
    if let Some(action) = &facts.action {
        vars.push(("FORGE_ACTION".into(), action.clone()));
    }
    vars.push((
        "FORGE_WORKSPACE".into(),
        request.workspace.display().to_string(),
    ));
    let has_artifacts_url = vars
        .iter()
        .any(|(k, v)| k == "FORGE_ARTIFACTS_URL" && !v.is_empty());
    if !has_artifacts_url {
        vars.retain(|(k, _)| k != "FORGE_ARTIFACTS_URL");
        if let Some(dir) = request.artifacts_default {
            vars.push((
                "FORGE_ARTIFACTS_URL".into(),
                format!("file://{}", dir.display()),
            ));
        }
    }
    let mut ctx = BuildContext::from_vars(vars, |p| {
        p != Path::new(crate::context::DEFAULT_TOKEN_FILE) && p.exists()
    })?;

    let mut problems = Vec::new();
    if let Some(path) = token_file {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                ctx.token_source = TokenSource::Env(Secret::new(text.trim()));
            }
            Ok(_) => problems.push(VarProblem {
                variable: "FORGE_TOKEN_FILE",
                problem: format!("{} is empty", path.display()),
                fix: "put the token in the file, or unset the variable".into(),
            }),
            Err(err) => problems.push(VarProblem {
                variable: "FORGE_TOKEN_FILE",
                problem: format!("cannot read {}: {err}", path.display()),
                fix: "point it at a readable file holding the token, or unset it".into(),
            }),
        }
    }
    let token = match std::mem::replace(&mut ctx.token_source, TokenSource::None) {
        TokenSource::Env(secret) => Some(secret),
        _ => None,
    };
    if request.post_statuses {
        if token.is_none() {
            problems.push(VarProblem {
                variable: "FORGE_TOKEN",
                problem: "--post-statuses needs a token and none is set".into(),
                fix: "set FORGE_TOKEN or FORGE_TOKEN_FILE to a token that may post commit statuses, or drop --post-statuses".into(),
            });
        }
        if ctx.status_url.is_none() {
            ctx.status_url = Some(format!(
                "{}/repos/{}/{}/statuses/{}",
                ctx.api_url, ctx.owner, ctx.repo, ctx.sha
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ContextError { problems });
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

/// The exit code for a cancelled run (128+signal), else `code`.
fn cancelled_or(cancel: &Cancellation, code: u8) -> u8 {
    match cancel.signal() {
        Some(signal) => (128 + signal).clamp(0, 255) as u8,
        None => code,
    }
}

fn is_full_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The first 7 characters of a commit id, as git shows it.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}
