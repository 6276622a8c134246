//! The build context: the facts of one build read from the `FORGE_*`
//! environment (owner, repository, commit, action, where statuses and
//! artifacts go, where the source tree is), validated so that a missing or
//! malformed variable is reported by name with its fix, before anything runs.
//! The contract is documented in `docs/environment.md`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// Default forge API (GitHub).
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Where the launcher puts the token, next to `/forgexec`.
pub const DEFAULT_TOKEN_FILE: &str = "/forge/token";
/// Default source tree inside the container.
pub const DEFAULT_WORKSPACE: &str = "/forge/workspace";
/// Default time a cancelled command gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Environment variables that carry the credential and never reach commands.
pub const CREDENTIAL_VARS: [&str; 2] = ["FORGE_TOKEN", "FORGE_TOKEN_FILE"];

/// Validated facts of one build.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    pub pull_request: Option<u64>,
    pub commit_count: Option<u64>,
    pub install_id: Option<u64>,
    pub action: String,
    pub status_url: Option<String>,
    pub status_context: String,
    pub target_url: Option<String>,
    pub api_url: String,
    pub ca_cert: Option<PathBuf>,
    pub workspace: PathBuf,
    pub artifacts_url: Option<String>,
    pub build_id: String,
    pub grace: Duration,
    /// Where the token comes from; read (and the file deleted) by
    /// [`BuildContext::take_token`] before any build command runs.
    pub token_source: TokenSource,
}

/// Where the forge credential comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    None,
    /// A file that is read and then deleted (`FORGE_TOKEN_FILE`, `/forge/token`).
    File(PathBuf),
    /// `FORGE_TOKEN`: convenient locally, weaker (see docs/environment.md).
    Env(Secret),
}

impl TokenSource {
    /// Where the credential comes from: `FORGE_TOKEN_FILE`, else
    /// `FORGE_TOKEN`, else the launcher's `/forge/token` when it exists.
    pub fn from_vars(
        token_file: Option<&str>,
        token: Option<&str>,
        file_exists: impl Fn(&Path) -> bool,
    ) -> TokenSource {
        match (token_file, token) {
            (Some(path), _) => TokenSource::File(PathBuf::from(path)),
            (None, Some(token)) => TokenSource::Env(Secret::new(token.trim())),
            (None, None) if file_exists(Path::new(DEFAULT_TOKEN_FILE)) => {
                TokenSource::File(PathBuf::from(DEFAULT_TOKEN_FILE))
            }
            (None, None) => TokenSource::None,
        }
    }

    /// Reads the token; a token file is deleted once read.
    pub fn take(self) -> Result<Option<Secret>, TokenError> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Env(secret) => Ok(Some(secret)),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?;
                std::fs::remove_file(&path).map_err(|source| TokenError::Delete {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty { path });
                }
                Ok(Some(Secret::new(token)))
            }
        }
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq)]
pub struct VarProblem {
    pub variable: &'static str,
    pub problem: String,
    pub fix: String,
}

/// Every problem found in the environment, reported together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ContextError {
    pub problems: Vec<VarProblem>,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "environment: {}: {}\n  help: {}",
                p.variable, p.problem, p.fix
            )?;
        }
        Ok(())
    }
}

/// Reading or removing the token failed: the build must not run, because the
/// credential could stay readable by pull-request code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the forge token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the forge token file {path} is empty")]
    Empty { path: PathBuf },
    #[error("cannot delete the forge token file {path} before running build commands: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BuildContext {
    /// Reads the context from the process environment.
    pub fn from_env() -> Result<Self, ContextError> {
        Self::from_vars(std::env::vars(), |p| p.exists())
    }

    /// Reads the context from the given variables; `file_exists` decides
    /// whether the default token file is there (a seam for tests).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        file_exists: impl Fn(&Path) -> bool,
    ) -> Result<Self, ContextError> {
        let vars = Vars(vars.into_iter().collect());
        let get = |name: &str| vars.get(name);
        let mut problems = Vec::new();

        let owner = required(
            &vars,
            "FORGE_OWNER",
            is_name,
            "a GitHub user or organisation such as `octo-org`",
            &mut problems,
        );
        let repo = required(
            &vars,
            "FORGE_REPO",
            is_name,
            "a repository name such as `hello-world`",
            &mut problems,
        );
        let sha = required(
            &vars,
            "FORGE_SHA",
            is_sha,
            "the full 40-character hexadecimal commit id (`git rev-parse HEAD`)",
            &mut problems,
        );
        let pull_request = number(
            &vars,
            "FORGE_PULL_REQUEST",
            "the pull request number, such as `42`",
            &mut problems,
        );
        let commit_count = number(
            &vars,
            "FORGE_COMMIT_COUNT",
            "the number of commits in the pull request",
            &mut problems,
        );
        let install_id = number(
            &vars,
            "FORGE_INSTALL_ID",
            "the numeric GitHub App installation id",
            &mut problems,
        );

        let action = get("FORGE_ACTION").unwrap_or("execute").to_string();
        if !is_action_name(&action) {
            problems.push(VarProblem {
                variable: "FORGE_ACTION",
                problem: format!("`{action}` is not a valid action name"),
                fix: "use a name from `actions:` in .forge.yml (letters, digits, `_`, `.`, `-`), or unset it for `execute`".into(),
            });
        }

        let status_url = url(&vars, "FORGE_STATUS_URL", "the pull request's `statuses_url`, such as `https://api.github.com/repos/o/r/statuses/<sha>`", &mut problems);
        let target_url = url(
            &vars,
            "FORGE_TARGET_URL",
            "an http(s) link to the build page",
            &mut problems,
        );
        let api_url = url(
            &vars,
            "FORGE_API_URL",
            "the forge API root, such as `https://api.github.com`",
            &mut problems,
        )
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        let artifacts_url = match get("FORGE_ARTIFACTS_URL") {
            Some(v) if v.starts_with("file://") || is_http_url(v) => {
                Some(v.trim_end_matches('/').to_string())
            }
            Some(v) => {
                problems.push(VarProblem {
                    variable: "FORGE_ARTIFACTS_URL",
                    problem: format!("`{v}` is neither an http(s):// nor a file:// URL"),
                    fix: "give a WebDAV/PUT base such as `https://artifacts.example.com/builds` or a directory as `file:///path`".into(),
                });
                None
            }
            None => None,
        };
        let status_context = get("FORGE_STATUS_CONTEXT")
            .map(str::to_string)
            .unwrap_or_else(|| format!("forge/{action}"));

        let ca_cert = get("FORGE_CA_CERT").map(PathBuf::from);
        if let Some(path) = &ca_cert {
            if !file_exists(path) {
                problems.push(VarProblem {
                    variable: "FORGE_CA_CERT",
                    problem: format!("{} does not exist", path.display()),
                    fix: "point it at a PEM file with the private forge's CA certificate(s), or unset it".into(),
                });
            }
        }

        let workspace = PathBuf::from(get("FORGE_WORKSPACE").unwrap_or(DEFAULT_WORKSPACE));
        if !workspace.is_absolute() {
            problems.push(VarProblem {
                variable: "FORGE_WORKSPACE",
                problem: format!("`{}` is not an absolute path", workspace.display()),
                fix: "give an absolute directory such as `/forge/workspace`".into(),
            });
        }

        let build_id = match get("FORGE_BUILD_ID") {
            Some(id) if is_name(id) => id.to_string(),
            Some(id) => {
                problems.push(VarProblem {
                    variable: "FORGE_BUILD_ID",
                    problem: format!("`{id}` may only hold letters, digits, `_`, `.` and `-`"),
                    fix: "use an id such as `20261125T043000Z` or unset it to use the start time"
                        .into(),
                });
                String::new()
            }
            None => utc_timestamp(SystemTime::now()),
        };

        let grace = match get("FORGE_GRACE") {
            None => DEFAULT_GRACE,
            Some(text) => match parse_duration(text) {
                Some(d) => d,
                None => {
                    problems.push(VarProblem {
                        variable: "FORGE_GRACE",
                        problem: format!("`{text}` is not a duration"),
                        fix: "give seconds or a duration such as `10s`, `1m`".into(),
                    });
                    DEFAULT_GRACE
                }
            },
        };

        let token_source =
            TokenSource::from_vars(get("FORGE_TOKEN_FILE"), get("FORGE_TOKEN"), &file_exists);

        if !problems.is_empty() {
            return Err(ContextError { problems });
        }
        Ok(BuildContext {
            owner: owner.unwrap_or_default(),
            repo: repo.unwrap_or_default(),
            sha: sha.unwrap_or_default(),
            pull_request,
            commit_count,
            install_id,
            action,
            status_url,
            status_context,
            target_url,
            api_url,
            ca_cert,
            workspace,
            artifacts_url,
            build_id,
            grace,
            token_source,
        })
    }

    /// Reads the token and, when it came from a file, deletes the file, so
    /// that no build command can open it. Must run before the first command.
    pub fn take_token(&mut self) -> Result<Option<Secret>, TokenError> {
        std::mem::replace(&mut self.token_source, TokenSource::None).take()
    }

    /// The build facts every command sees (never the credential).
    pub fn build_facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![
            ("CI".to_string(), "true".to_string()),
            ("FORGE_OWNER".into(), self.owner.clone()),
            ("FORGE_REPO".into(), self.repo.clone()),
            ("FORGE_SHA".into(), self.sha.clone()),
            ("FORGE_ACTION".into(), self.action.clone()),
            ("FORGE_BUILD_ID".into(), self.build_id.clone()),
            (
                "FORGE_WORKSPACE".into(),
                self.workspace.display().to_string(),
            ),
        ];
        let optional = [
            ("FORGE_PULL_REQUEST", self.pull_request),
            ("FORGE_COMMIT_COUNT", self.commit_count),
            ("FORGE_INSTALL_ID", self.install_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                facts.push((name.to_string(), value.to_string()));
            }
        }
        facts
    }
}

/// The environment, with empty values treated as unset.
struct Vars(std::collections::HashMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

fn required(
    get: &Vars,
    variable: &'static str,
    valid: fn(&str) -> bool,
    expected: &str,
    problems: &mut Vec<VarProblem>,
) -> Option<String> {
    match get.get(variable) {
        None => {
            problems.push(VarProblem {
                variable,
                problem: "is not set".into(),
                fix: format!("set it to {expected}"),
            });
            None
        }
        Some(v) if !valid(v) => {
            problems.push(VarProblem {
                variable,
                problem: format!("`{v}` is malformed"),
                fix: format!("set it to {expected}"),
            });
            None
        }
        Some(v) => Some(v.to_string()),
    }
}

fn number(
    get: &Vars,
    variable: &'static str,
    expected: &str,
    problems: &mut Vec<VarProblem>,
) -> Option<u64> {
    let text = get.get(variable)?;
    match text.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(VarProblem {
                variable,
                problem: format!("`{text}` is not a whole number"),
                fix: format!("set it to {expected}, or unset it"),
            });
            None
        }
    }
}

fn url(
    get: &Vars,
    variable: &'static str,
    expected: &str,
    problems: &mut Vec<VarProblem>,
) -> Option<String> {
    let text = get.get(variable)?;
    if is_http_url(text) {
        Some(text.to_string())
    } else {
        problems.push(VarProblem {
            variable,
            problem: format!("`{text}` is not an http:// or https:// URL"),
            fix: format!("set it to {expected}, or unset it"),
        });
        None
    }
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.chars().any(char::is_whitespace))
}

/// GitHub owner and repository names, build ids: `[A-Za-z0-9_.-]+`, not `.`/`..`.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text.len() <= 100
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_action_name(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Full SHA-1 (40) or SHA-256 (64) object ids.
fn is_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// Seconds (`10`) or a humantime duration (`10s`, `1m30s`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

/// `20261125T043000Z`: sortable, safe in object names and service names.
pub fn utc_timestamp(time: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    rfc.replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("FORGE_OWNER", "octo"),
            ("FORGE_REPO", "hello"),
            ("FORGE_SHA", SHA),
        ]
    }

    #[test]
    fn minimal_environment_gets_defaults() {
        let ctx = BuildContext::from_vars(vars(&base()), |_| false).unwrap();
        assert_eq!(ctx.action, "execute");
        assert_eq!(ctx.status_context, "forge/execute");
        assert_eq!(ctx.api_url, DEFAULT_API_URL);
        assert_eq!(ctx.workspace, PathBuf::from(DEFAULT_WORKSPACE));
        assert_eq!(ctx.grace, DEFAULT_GRACE);
        assert_eq!(ctx.token_source, TokenSource::None);
        assert_eq!(ctx.build_id.len(), "20261125T043000Z".len());
    }

    #[test]
    fn every_problem_is_named_by_its_variable() {
        let err = BuildContext::from_vars(
            vars(&[
                ("FORGE_REPO", "a b"),
                ("FORGE_SHA", "abc"),
                ("FORGE_PULL_REQUEST", "x1"),
                ("FORGE_STATUS_URL", "ftp://x"),
            ]),
            |_| false,
        )
        .unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            [
                "FORGE_OWNER",
                "FORGE_REPO",
                "FORGE_SHA",
                "FORGE_PULL_REQUEST",
                "FORGE_STATUS_URL"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("environment: FORGE_OWNER: is not set\n  help: set it to"),
            "{text}"
        );
        assert!(text.contains("FORGE_SHA: `abc` is malformed"), "{text}");
    }

    #[test]
    fn token_file_is_default_when_present_and_deleted_after_reading() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "ghs_secret\n").unwrap();
        let mut pairs = base();
        let path_text = token_path.display().to_string();
        pairs.push(("FORGE_TOKEN_FILE", &path_text));
        let mut ctx = BuildContext::from_vars(vars(&pairs), |_| false).unwrap();
        let token = ctx.take_token().unwrap().unwrap();
        assert_eq!(token.expose(), "ghs_secret");
        assert!(
            !token_path.exists(),
            "token file must be gone before commands run"
        );

        let ctx =
            BuildContext::from_vars(vars(&base()), |p| p == Path::new(DEFAULT_TOKEN_FILE)).unwrap();
        assert_eq!(
            ctx.token_source,
            TokenSource::File(DEFAULT_TOKEN_FILE.into())
        );
    }

    #[test]
    fn build_facts_never_include_the_token() {
        let mut pairs = base();
        pairs.push(("FORGE_TOKEN", "ghp_x"));
        pairs.push(("FORGE_PULL_REQUEST", "7"));
        let ctx = BuildContext::from_vars(vars(&pairs), |_| false).unwrap();
        let facts = ctx.build_facts();
        assert!(facts
            .iter()
            .all(|(k, v)| !k.contains("TOKEN") && v != "ghp_x"));
        assert!(facts.contains(&("FORGE_PULL_REQUEST".into(), "7".into())));
        assert!(facts.contains(&("CI".into(), "true".into())));
    }

    #[test]
    fn timestamps_are_compact_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_045_000);
        assert_eq!(utc_timestamp(t), "20251125T043000Z");
    }
}
