//! The build facts: who and what a build is for (owner, repository, commit,
//! action, pull request), where it reports (statuses, artifacts, the forge
//! API), where its source is, and its credential. This module is their one
//! home:
//! - [`names`]: the checked names (`RepoName`, `CommitId`, `ActionName`,
//!   `BuildId`), each parsed with `FromStr`;
//! - [`raw`]: the raw input, every `FORGE_*` variable as optional text,
//!   filled by the environment, git, a webhook event or flags, and layered;
//! - [`validate`]: the one step from raw input to a [`BuildContext`], or to
//!   every problem at once, each named by its variable with its fix;
//! - [`BuildContext::to_vars`]: the way back, the `FORGE_*` variables a
//!   launcher gives the build container.
//!
//! The contract is documented in `docs/environment.md`.

pub mod names;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use names::{ActionName, BuildId, CommitId, NameError, RepoName};
pub use raw::{var, RawFacts, CREDENTIAL_VARS};

use crate::fsread::{self, FsReadError, Links};
use crate::secret::Secret;
use crate::workspace::UnpackLimits;

/// Default forge API (GitHub).
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// Where the launcher puts the token, next to `/forgexec`.
pub const DEFAULT_TOKEN_FILE: &str = "/forge/token";
/// Default source tree inside the container.
pub const DEFAULT_WORKSPACE: &str = "/forge/workspace";
/// Default time a cancelled command gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Where a build runs, which decides how its credential is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In a build container: the launcher's `/forge/token` is the default
    /// credential, and a token file is deleted once read.
    Container,
    /// On a developer's machine (`forgexec run`, the pre-push hook): a
    /// token file is the developer's, read but never deleted, and
    /// `/forge/token` is not looked for.
    Local,
}

/// Validated facts of one build.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub owner: RepoName,
    pub repo: RepoName,
    pub sha: CommitId,
    pub pull_request: Option<u64>,
    pub commit_count: Option<u64>,
    pub install_id: Option<u64>,
    pub action: ActionName,
    pub status_url: Option<String>,
    pub status_context: String,
    pub target_url: Option<String>,
    pub api_url: String,
    pub ca_cert: Option<PathBuf>,
    pub workspace: PathBuf,
    pub artifacts_url: Option<String>,
    pub build_id: BuildId,
    pub grace: Duration,
    /// `FORGE_INSECURE_HTTP`: the token may go over plain HTTP to a host
    /// that is not a loopback address.
    pub insecure_http: bool,
    /// How much the source zipball may unpack to.
    pub unpack_limits: UnpackLimits,
    /// Where the token comes from; read (and a container's token file
    /// deleted) by [`BuildContext::take_token`] before any command runs.
    pub token_source: TokenSource,
}

/// Where the forge credential comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    None,
    /// A file that is read and then deleted (`FORGE_TOKEN_FILE`, `/forge/token`).
    File(PathBuf),
    /// A file that is read and kept: the developer's own (local builds).
    KeptFile(PathBuf),
    /// `FORGE_TOKEN`: convenient locally, weaker (see docs/environment.md).
    Env(Secret),
}

/// Largest token file read: tokens are short, and a path pointing at a
/// huge file must not fill memory.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

impl TokenSource {
    /// Reads the token; a [`TokenSource::File`] is deleted once read.
    pub fn take(self) -> Result<Option<Secret>, TokenError> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Env(secret) => Ok(Some(secret)),
            // The developer's own file may well be a link (a password
            // manager's); it is not deleted.
            TokenSource::KeptFile(path) => read_token_file(&path, Links::Follow).map(Some),
            // A link is refused: deleting it would leave its target, the
            // token, readable by the build.
            TokenSource::File(path) => {
                let token = read_token_file(&path, Links::Refuse)?;
                std::fs::remove_file(&path).map_err(|source| TokenError::Delete {
                    path: path.clone(),
                    source,
                })?;
                Ok(Some(token))
            }
        }
    }
}

fn read_token_file(path: &Path, links: Links) -> Result<Secret, TokenError> {
    let bytes = fsread::read_regular(path, links, MAX_TOKEN_FILE_BYTES).map_err(|err| {
        if err.is_refusal() {
            TokenError::Refused(err)
        } else {
            TokenError::Read(err)
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(token))
}

/// One problem with one fact, named by its variable.
#[derive(Debug, Clone, PartialEq)]
pub struct FactProblem {
    pub variable: &'static str,
    pub problem: String,
    pub fix: String,
}

/// Every problem found in the facts, reported together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FactsError {
    pub problems: Vec<FactProblem>,
}

impl fmt::Display for FactsError {
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

impl FactsError {
    /// One line for a status description: the first problem, and how many
    /// more there are.
    pub fn summary(&self) -> String {
        let mut text = match self.problems.first() {
            Some(p) => format!("invalid build environment: {} {}", p.variable, p.problem),
            None => "invalid build environment".to_string(),
        };
        if self.problems.len() > 1 {
            text.push_str(&format!(" (+{} more)", self.problems.len() - 1));
        }
        text
    }
}

/// Reading or removing the token failed: the build must not run, because the
/// credential could stay readable by pull-request code.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("refusing the forge token file: {0}")]
    Refused(#[source] FsReadError),
    #[error("cannot read the forge token file: {0}")]
    Read(#[source] FsReadError),
    #[error("the forge token file {path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("the forge token file {path} is empty")]
    Empty { path: PathBuf },
    #[error("cannot delete the forge token file {path} before running build commands: {source}")]
    Delete {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TokenError {
    /// The operator's input is wrong (exit 2), not the file system.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            TokenError::Refused(_) | TokenError::NotUtf8 { .. } | TokenError::Empty { .. }
        )
    }

    /// The exit code for a build that stops here.
    pub fn exit_code(&self) -> u8 {
        if self.is_invalid_input() {
            crate::exit::INVALID
        } else {
            crate::exit::INFRASTRUCTURE
        }
    }
}

/// The commit statuses URL of a commit on a GitHub-compatible API.
pub fn default_status_url(api_url: &str, owner: &str, repo: &str, sha: &str) -> String {
    format!(
        "{}/repos/{owner}/{repo}/statuses/{sha}",
        api_url.trim_end_matches('/')
    )
}

/// Why a duration's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration")]
    NotADuration(String),
    #[error("`{text}` is not a duration: unknown unit `{unit}`")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Seconds (`10`) or a humantime duration (`10s`, `1m30s`), surrounding
/// blanks ignored. The one parser of durations, for variables and
/// `.forge.yml` alike.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::TooLarge(text.to_string()));
    }
    humantime::parse_duration(trimmed).map_err(|err| match err {
        humantime::DurationError::UnknownUnit { unit, .. } => DurationError::UnknownUnit {
            text: text.to_string(),
            unit,
        },
        humantime::DurationError::NumberOverflow => DurationError::TooLarge(text.to_string()),
        _ => DurationError::NotADuration(text.to_string()),
    })
}

/// Bytes (`1000000`) or a size with a binary unit (`512MiB`, `16GiB`; `K`,
/// `M`, `G`, `T` mean the same).
pub fn parse_size(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// Bytes in the largest binary unit that divides them (`2GiB`), as
/// [`parse_size`] reads them back.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Checks the raw facts and makes the build context, or reports every
/// problem, each by its variable with the fix. `file_exists` decides
/// whether a file is there (the default token file, `FORGE_CA_CERT`): a
/// seam for tests.
pub fn validate(
    raw: &RawFacts,
    mode: Mode,
    file_exists: impl Fn(&Path) -> bool,
) -> Result<BuildContext, FactsError> {
    let mut check = Checker::default();
    let owner = check.required(
        var::OWNER,
        &raw.owner,
        "a GitHub user or organisation such as `octo-org`",
    );
    let repo = check.required(
        var::REPO,
        &raw.repo,
        "a repository name such as `hello-world`",
    );
    let sha = check.required(
        var::SHA,
        &raw.sha,
        "the full 40-character hexadecimal commit id (`git rev-parse HEAD`)",
    );
    let pull_request = check.number(
        var::PULL_REQUEST,
        &raw.pull_request,
        "the pull request number, such as `42`",
    );
    let commit_count = check.number(
        var::COMMIT_COUNT,
        &raw.commit_count,
        "the number of commits in the pull request",
    );
    let install_id = check.number(
        var::INSTALL_ID,
        &raw.install_id,
        "the numeric GitHub App installation id",
    );
    let action = match raw.action.as_deref() {
        None => Some(ActionName::execute()),
        Some(text) => check.parsed(
            var::ACTION,
            text,
            "use a name from `actions:` in .forge.yml (letters, digits, `_`, `.`, `-`), or unset it for `execute`",
        ),
    };
    let status_url = check.url(
        var::STATUS_URL,
        &raw.status_url,
        "the pull request's `statuses_url`, such as `https://api.github.com/repos/o/r/statuses/<sha>`",
    );
    let target_url = check.url(
        var::TARGET_URL,
        &raw.target_url,
        "an http(s) link to the build page",
    );
    let api_url = check
        .url(
            var::API_URL,
            &raw.api_url,
            "the forge API root, such as `https://api.github.com`",
        )
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let artifacts_url = check.artifacts_url(&raw.artifacts_url);
    let insecure_http = match raw.insecure_http.as_deref() {
        None | Some("0" | "false" | "no") => false,
        Some("1" | "true" | "yes") => true,
        Some(text) => {
            check.problem(
                var::INSECURE_HTTP,
                format!("`{text}` is not `1` or `0`"),
                "set it to `1` to send the token over plain http:// (only on a network you trust), or unset it",
            );
            false
        }
    };
    if !insecure_http {
        let carriers = [
            (var::API_URL, raw.api_url.as_deref(), "the token"),
            (var::STATUS_URL, raw.status_url.as_deref(), "the token"),
            (
                var::ARTIFACTS_URL,
                raw.artifacts_url.as_deref().filter(|u| url_has_userinfo(u)),
                "its password",
            ),
        ];
        for (variable, url, what) in carriers {
            if let Some(url) = url.filter(|u| is_cleartext_remote(u)) {
                check.problem(
                    variable,
                    format!(
                        "`{}` is plain http:// to a host that is not this machine: {what} would cross the network unencrypted",
                        crate::http::redact_url(url)
                    ),
                    format!(
                        "use https://, or set {}=1 to allow plain HTTP (only on a network you trust)",
                        var::INSECURE_HTTP
                    ),
                );
            }
        }
    }
    let ca_cert = raw.ca_cert.as_ref().map(PathBuf::from);
    if let Some(path) = &ca_cert {
        if !file_exists(path) {
            check.problem(
                var::CA_CERT,
                format!("{} does not exist", path.display()),
                "point it at a PEM file with the private forge's CA certificate(s), or unset it",
            );
        }
    }
    let workspace = PathBuf::from(raw.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE));
    if !workspace.is_absolute() {
        check.problem(
            var::WORKSPACE,
            format!("`{}` is not an absolute path", workspace.display()),
            "give an absolute directory such as `/forge/workspace`",
        );
    }
    let build_id = match raw.build_id.as_deref() {
        None => Some(BuildId::from_time(SystemTime::now())),
        Some(text) => check.parsed(
            var::BUILD_ID,
            text,
            "use an id such as `20261125T043000Z` or unset it to use the start time",
        ),
    };
    let grace = match raw.grace.as_deref() {
        None => DEFAULT_GRACE,
        Some(text) => parse_duration(text).unwrap_or_else(|err| {
            check.problem(
                var::GRACE,
                err.to_string(),
                "give seconds or a duration such as `10s`, `1m`",
            );
            DEFAULT_GRACE
        }),
    };
    let defaults = UnpackLimits::DEFAULT;
    let unpack_limits = UnpackLimits {
        max_bytes: check.limit(
            var::UNPACK_MAX_BYTES,
            &raw.unpack_max_bytes,
            parse_size,
            defaults.max_bytes,
            "give bytes or a size such as `32GiB` or `512MiB`",
        ),
        max_entries: check.limit(
            var::UNPACK_MAX_ENTRIES,
            &raw.unpack_max_entries,
            |t| t.parse().ok(),
            defaults.max_entries,
            "give a whole number of entries such as `2000000`",
        ),
        max_ratio: check.limit(
            var::UNPACK_MAX_RATIO,
            &raw.unpack_max_ratio,
            |t| t.parse().ok(),
            defaults.max_ratio,
            "give a whole number such as `1000` (unpacked size over compressed size)",
        ),
    };
    let token_source = token_source(raw, mode, &file_exists);

    let (Some(owner), Some(repo), Some(sha), Some(action), Some(build_id)) =
        (owner, repo, sha, action, build_id)
    else {
        return Err(check.into_error());
    };
    if !check.problems.is_empty() {
        return Err(check.into_error());
    }
    let status_context = raw
        .status_context
        .clone()
        .unwrap_or_else(|| action.status_context());
    Ok(BuildContext {
        owner,
        repo,
        sha,
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
        insecure_http,
        unpack_limits,
        token_source,
    })
}

/// Where the credential comes from: `FORGE_TOKEN_FILE`, else `FORGE_TOKEN`,
/// else (in a container) the launcher's `/forge/token` when it exists.
fn token_source(raw: &RawFacts, mode: Mode, file_exists: impl Fn(&Path) -> bool) -> TokenSource {
    match (&raw.token_file, &raw.token, mode) {
        (Some(path), _, Mode::Container) => TokenSource::File(PathBuf::from(path)),
        (Some(path), _, Mode::Local) => TokenSource::KeptFile(PathBuf::from(path)),
        (None, Some(token), _) => TokenSource::Env(Secret::new(token.trim())),
        (None, None, Mode::Container) if file_exists(Path::new(DEFAULT_TOKEN_FILE)) => {
            TokenSource::File(PathBuf::from(DEFAULT_TOKEN_FILE))
        }
        (None, None, _) => TokenSource::None,
    }
}

/// Collects the problems of one validation.
#[derive(Default)]
struct Checker {
    problems: Vec<FactProblem>,
}

impl Checker {
    fn problem(&mut self, variable: &'static str, problem: String, fix: impl Into<String>) {
        self.problems.push(FactProblem {
            variable,
            problem,
            fix: fix.into(),
        });
    }

    fn into_error(self) -> FactsError {
        FactsError {
            problems: self.problems,
        }
    }

    fn required<T: std::str::FromStr>(
        &mut self,
        variable: &'static str,
        value: &Option<String>,
        expected: &str,
    ) -> Option<T> {
        match value.as_deref() {
            None => {
                self.problem(
                    variable,
                    "is not set".into(),
                    format!("set it to {expected}"),
                );
                None
            }
            Some(text) => match text.parse() {
                Ok(value) => Some(value),
                Err(_) => {
                    self.problem(
                        variable,
                        format!("`{text}` is malformed"),
                        format!("set it to {expected}"),
                    );
                    None
                }
            },
        }
    }

    fn parsed<T>(&mut self, variable: &'static str, text: &str, fix: &str) -> Option<T>
    where
        T: std::str::FromStr<Err = NameError>,
    {
        match text.parse::<T>() {
            Ok(value) => Some(value),
            Err(err) => {
                self.problem(variable, format!("`{text}` is not {}", err.expected), fix);
                None
            }
        }
    }

    fn number(
        &mut self,
        variable: &'static str,
        value: &Option<String>,
        expected: &str,
    ) -> Option<u64> {
        let text = value.as_deref()?;
        match text.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(
                    variable,
                    format!("`{text}` is not a whole number"),
                    format!("set it to {expected}, or unset it"),
                );
                None
            }
        }
    }

    fn url(
        &mut self,
        variable: &'static str,
        value: &Option<String>,
        expected: &str,
    ) -> Option<String> {
        let text = value.as_deref()?;
        if is_http_url(text) {
            Some(text.to_string())
        } else {
            self.problem(
                variable,
                format!("`{text}` is not an http:// or https:// URL"),
                format!("set it to {expected}, or unset it"),
            );
            None
        }
    }

    /// A positive limit, or its default when unset.
    fn limit(
        &mut self,
        variable: &'static str,
        value: &Option<String>,
        parse: impl Fn(&str) -> Option<u64>,
        default: u64,
        fix: &str,
    ) -> u64 {
        let Some(text) = value.as_deref() else {
            return default;
        };
        match parse(text.trim()) {
            Some(n) if n > 0 => n,
            _ => {
                self.problem(variable, format!("`{text}` is not a positive limit"), fix);
                default
            }
        }
    }

    fn artifacts_url(&mut self, value: &Option<String>) -> Option<String> {
        let text = value.as_deref()?;
        if text.starts_with("file://") || is_http_url(text) {
            return Some(text.trim_end_matches('/').to_string());
        }
        self.problem(
            var::ARTIFACTS_URL,
            format!("`{text}` is neither an http(s):// nor a file:// URL"),
            "give a WebDAV/PUT base such as `https://artifacts.example.com/builds` or a directory as `file:///path`",
        );
        None
    }
}

/// An `http://` URL whose host is not a loopback address (`localhost`,
/// `127.0.0.0/8`, `::1`): what is sent to it crosses a network in clear.
fn is_cleartext_remote(url: &str) -> bool {
    let Some(rest) = strip_prefix_ignore_case(url, "http://") else {
        return false;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Whether a URL has user info (`scheme://user:password@host`).
fn url_has_userinfo(url: &str) -> bool {
    !crate::http::url_secrets(url).is_empty()
}

fn is_http_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.chars().any(char::is_whitespace))
}

impl BuildContext {
    /// Reads the context from the process environment.
    pub fn from_env() -> Result<Self, FactsError> {
        validate(&RawFacts::from_env(), Mode::Container, |p| p.exists())
    }

    /// Reads the token and, when it came from a build's token file, deletes
    /// the file, so that no build command can open it. Must run before the
    /// first command.
    pub fn take_token(&mut self) -> Result<Option<Secret>, TokenError> {
        std::mem::replace(&mut self.token_source, TokenSource::None).take()
    }

    /// The build facts every command sees (never the credential).
    pub fn build_facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![
            ("CI".to_string(), "true".to_string()),
            (var::OWNER.into(), self.owner.to_string()),
            (var::REPO.into(), self.repo.to_string()),
            (var::SHA.into(), self.sha.to_string()),
            (var::ACTION.into(), self.action.to_string()),
            (var::BUILD_ID.into(), self.build_id.to_string()),
            (var::WORKSPACE.into(), self.workspace.display().to_string()),
        ];
        let optional = [
            (var::PULL_REQUEST, self.pull_request),
            (var::COMMIT_COUNT, self.commit_count),
            (var::INSTALL_ID, self.install_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                facts.push((name.to_string(), value.to_string()));
            }
        }
        facts
    }

    /// The `FORGE_*` variables that give a build container this context
    /// (the launcher's side of the contract). Defaults are left out, so the
    /// container applies its own; the credential never is a variable.
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        let number = |n: Option<u64>| n.map(|n| n.to_string());
        let raw = RawFacts {
            owner: Some(self.owner.to_string()),
            repo: Some(self.repo.to_string()),
            sha: Some(self.sha.to_string()),
            pull_request: number(self.pull_request),
            commit_count: number(self.commit_count),
            install_id: number(self.install_id),
            action: Some(self.action.to_string()),
            status_url: self.status_url.clone(),
            status_context: (self.status_context != self.action.status_context())
                .then(|| self.status_context.clone()),
            target_url: self.target_url.clone(),
            api_url: (self.api_url != DEFAULT_API_URL).then(|| self.api_url.clone()),
            ca_cert: self.ca_cert.as_ref().map(|p| p.display().to_string()),
            workspace: (self.workspace != Path::new(DEFAULT_WORKSPACE))
                .then(|| self.workspace.display().to_string()),
            artifacts_url: self.artifacts_url.clone(),
            build_id: Some(self.build_id.to_string()),
            grace: (self.grace != DEFAULT_GRACE).then(|| format!("{}s", self.grace.as_secs())),
            insecure_http: self.insecure_http.then(|| "1".to_string()),
            unpack_max_bytes: (self.unpack_limits.max_bytes != UnpackLimits::DEFAULT.max_bytes)
                .then(|| self.unpack_limits.max_bytes.to_string()),
            unpack_max_entries: (self.unpack_limits.max_entries
                != UnpackLimits::DEFAULT.max_entries)
                .then(|| self.unpack_limits.max_entries.to_string()),
            unpack_max_ratio: (self.unpack_limits.max_ratio != UnpackLimits::DEFAULT.max_ratio)
                .then(|| self.unpack_limits.max_ratio.to_string()),
            token: None,
            token_file: None,
        };
        raw.to_vars()
    }
}

/// Enough of an invalid environment to post the final `error` status: the
/// pull request must get one even when the build cannot be described.
#[derive(Debug, Clone)]
pub struct ErrorReporting {
    pub status_url: String,
    pub status_context: String,
    pub target_url: Option<String>,
    pub api_url: String,
    pub ca_cert: Option<PathBuf>,
    pub token_source: TokenSource,
}

impl ErrorReporting {
    /// What the raw facts say about where to report, when `FORGE_STATUS_URL`
    /// is set and usable; validation's `problems` say which facts are not.
    pub fn from_raw(raw: &RawFacts, problems: &FactsError) -> Option<ErrorReporting> {
        let bad = |variable: &str| problems.problems.iter().any(|p| p.variable == variable);
        let status_url = raw.status_url.clone().filter(|_| !bad(var::STATUS_URL))?;
        let action = raw
            .action
            .as_deref()
            .and_then(|a| a.parse::<ActionName>().ok())
            .unwrap_or_else(ActionName::execute);
        Some(ErrorReporting {
            status_url,
            status_context: raw
                .status_context
                .clone()
                .unwrap_or_else(|| action.status_context()),
            target_url: raw.target_url.clone().filter(|_| !bad(var::TARGET_URL)),
            api_url: raw
                .api_url
                .clone()
                .filter(|_| !bad(var::API_URL))
                .unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            ca_cert: raw
                .ca_cert
                .as_ref()
                .map(PathBuf::from)
                .filter(|_| !bad(var::CA_CERT)),
            token_source: token_source(raw, Mode::Container, Path::exists),
        })
    }
}

#[cfg(test)]
mod tests;
