//! The forge: GitHub's REST API or a compatible one (Gitea, Forgejo, a test
//! server). forgexec needs two things from it: posting commit statuses
//! ([`ForgeClient::post_status`]) and fetching the source tree of a commit as
//! a zipball ([`ForgeClient::download_zipball`]), streamed to a temporary file
//! and unpacked safely by [`crate::workspace::unpack_zip`]. Requests carry the
//! token as `Authorization: Bearer`, and are retried per the
//! [`HttpClient`]'s policy; a 4xx other than 429 is final and reports the
//! forge's own message.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::http::{check_status, within, HttpClient, HttpError, RetryPolicy};
use crate::secret::Secret;
use crate::workspace::{unpack_zip_until, UnpackLimits, UnpackSummary, WorkspaceError};

/// Longest commit status description the GitHub API accepts, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// Errors of talking to the forge.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("cannot unpack the source of {commit}: {source}")]
    Unpack {
        /// `owner/repo@sha`.
        commit: String,
        #[source]
        source: WorkspaceError,
    },
    #[error("cannot create a temporary file for the source zipball in {}: {source}", dir.display())]
    TempFile {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {what} {value:?} for a forge API path: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] crate::http::BoxError),
    /// A contents-API answer that does not hold the file.
    #[error("GET {url}: {problem}")]
    Contents {
        /// Redacted.
        url: String,
        problem: ContentsProblem,
    },
}

/// What is wrong with a contents-API answer.
#[derive(Debug, thiserror::Error)]
pub enum ContentsProblem {
    #[error("the answer is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the answer has no `content`")]
    NoContent,
    #[error("the content is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("unsupported content encoding {0:?}")]
    Encoding(String),
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl ForgeError {
    /// The HTTP status of a failed request, if the forge answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ForgeError::Http(error) => error.status(),
            _ => None,
        }
    }

    /// How long the forge's rate limit holds, when this error is one.
    pub fn rate_limit(&self) -> Option<std::time::Duration> {
        match self {
            ForgeError::Http(error) => error.rate_limit(),
            _ => None,
        }
    }
}

/// State of a commit status, as the GitHub API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

impl std::fmt::Display for StatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A commit status. The description is truncated on construction to
/// [`MAX_DESCRIPTION_CHARS`] characters (ending in `…` when cut), which is
/// why it is only readable through [`CommitStatus::description`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    pub state: StatusState,
    /// Label distinguishing this status from others on the commit
    /// (e.g. `forgexec/execute`).
    pub context: String,
    description: String,
    /// Link shown with the status (the build log), if any.
    pub target_url: Option<String>,
}

impl CommitStatus {
    pub fn new(
        state: StatusState,
        context: impl Into<String>,
        description: impl AsRef<str>,
        target_url: Option<String>,
    ) -> CommitStatus {
        CommitStatus {
            state,
            context: context.into(),
            description: truncate_description(description.as_ref()),
            target_url,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

/// At most [`MAX_DESCRIPTION_CHARS`] characters. A description that is too
/// long keeps its end (`exited 2`, `timed out after 10m0s`): the longest
/// `` `quoted` `` part (the command) is shortened, ending in `…`; without
/// one that can give enough, the text is cut at the end, the last character
/// `…`. Line breaks become spaces (the forge shows one line).
pub fn truncate_description(text: &str) -> String {
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars.len() <= MAX_DESCRIPTION_CHARS {
        return chars.into_iter().collect();
    }
    let excess = chars.len() - MAX_DESCRIPTION_CHARS;
    if let Some((start, end)) = longest_quoted(&chars) {
        // Keep at least one character of the quoted text, then `…`.
        if end - start > excess + 1 {
            let keep = end - start - excess - 1;
            let mut out: String = chars[..start + keep].iter().collect();
            out.push('…');
            out.extend(&chars[end..]);
            return out;
        }
    }
    let mut cut: String = chars[..MAX_DESCRIPTION_CHARS - 1].iter().collect();
    cut.push('…');
    cut
}

/// The character range inside the longest pair of backquotes.
fn longest_quoted(chars: &[char]) -> Option<(usize, usize)> {
    let ticks: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] == '`').collect();
    ticks
        .chunks_exact(2)
        .map(|pair| (pair[0] + 1, pair[1]))
        .max_by_key(|(start, end)| end - start)
}

/// A client of one forge API.
#[derive(Debug, Clone)]
pub struct ForgeClient {
    api_url: String,
    token: Option<Secret>,
    http: HttpClient,
}

impl ForgeClient {
    /// `api_url` is the API root (`https://api.github.com`, or
    /// `https://forge.example/api/v3`); a trailing `/` is ignored.
    pub fn new(api_url: &str, token: Option<Secret>, http: HttpClient) -> ForgeClient {
        ForgeClient {
            api_url: api_url.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// The same client retrying per `policy`.
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> ForgeClient {
        ForgeClient {
            http: self.http.clone().with_retry_policy(policy),
            ..self.clone()
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    fn authorization(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|token| format!("Bearer {}", token.expose()))
    }

    /// POST `status` to `statuses_url` (the commit's
    /// `{api}/repos/{owner}/{repo}/statuses/{sha}`).
    pub fn post_status(&self, statuses_url: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let body = serde_json::to_vec(status).map_err(|e| {
            // Serializing plain strings cannot fail; keep a typed path anyway.
            HttpError::LocalIo {
                what: "cannot encode status",
                path: PathBuf::from(statuses_url),
                source: io::Error::other(e),
            }
        })?;
        let auth = self.authorization();
        self.http.send("POST", statuses_url, |agent, left| {
            let mut request = agent
                .post(statuses_url)
                .header("Accept", "application/vnd.github+json")
                .header("Content-Type", "application/json");
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            within(request, left).send(&body[..])
        })?;
        tracing::debug!("posted status {} for {}", status.state, status.context);
        Ok(())
    }

    /// Fetch the source of `owner/repo` at `sha` as a zipball (following
    /// the forge's redirect to its archive host) and unpack it into
    /// `dest_dir` with the top folder stripped. The archive is streamed to
    /// an anonymous temporary file next to `dest_dir`, never held in memory.
    pub fn download_zipball(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        dest_dir: &Path,
        limits: &UnpackLimits,
    ) -> Result<UnpackSummary, ForgeError> {
        self.download_zipball_until(owner, repo, sha, dest_dir, limits, &|| false)
    }

    /// [`Self::download_zipball`] whose unpacking stops as soon as
    /// `cancelled` says so ([`crate::workspace::unpack_zip_until`]).
    pub fn download_zipball_until(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        dest_dir: &Path,
        limits: &UnpackLimits,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<UnpackSummary, ForgeError> {
        check_segment("owner", owner)?;
        check_segment("repository", repo)?;
        check_segment("commit", sha)?;
        let url = format!("{}/repos/{owner}/{repo}/zipball/{sha}", self.api_url);
        let temp_dir = temp_dir_for(dest_dir);
        let mut archive =
            tempfile::tempfile_in(&temp_dir).map_err(|source| ForgeError::TempFile {
                dir: temp_dir.clone(),
                source,
            })?;
        let auth = self.authorization();
        let bytes = self.http.retry("GET", &url, |agent, left| {
            let local = |source| HttpError::LocalIo {
                what: "cannot write the zipball to a temporary file in",
                path: temp_dir.clone(),
                source,
            };
            archive.set_len(0).map_err(local)?;
            archive.seek(SeekFrom::Start(0)).map_err(local)?;
            let mut request = agent
                .get(&url)
                .header("Accept", "application/vnd.github+json");
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            let response = within(request, left)
                .call()
                .map_err(|e| HttpError::from_ureq("GET", &url, e))?;
            let response = check_status("GET", &url, response)?;
            let mut body = response.into_body().into_reader();
            copy_body(&mut body, &mut archive, "GET", &url, &temp_dir)
        })?;
        tracing::debug!("downloaded {bytes} bytes of source for {owner}/{repo}@{sha}");
        archive
            .seek(SeekFrom::Start(0))
            .map_err(|source| ForgeError::TempFile {
                dir: temp_dir.clone(),
                source,
            })?;
        unpack_zip_until(io::BufReader::new(archive), dest_dir, limits, cancelled).map_err(
            |source| ForgeError::Unpack {
                commit: format!("{owner}/{repo}@{sha}"),
                source,
            },
        )
    }
}

/// Copy a response body to a file, telling network failures (retryable)
/// from local write failures (final).
fn copy_body(
    body: &mut impl Read,
    out: &mut File,
    method: &str,
    url: &str,
    temp_dir: &Path,
) -> Result<u64, HttpError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::from_ureq(method, url, ureq::Error::Io(e))),
        };
        out.write_all(&buf[..n])
            .map_err(|source| HttpError::LocalIo {
                what: "cannot write the zipball to a temporary file in",
                path: temp_dir.to_path_buf(),
                source,
            })?;
        total += n as u64;
    }
    Ok(total)
}

/// Where the zipball's temporary file goes: beside the destination (the
/// image may have no `/tmp`), or the current directory.
fn temp_dir_for(dest_dir: &Path) -> PathBuf {
    match dest_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// One path segment of an API URL: non-empty, no `/`, not `.`/`..`, and
/// only characters forge names and shas use.
fn check_segment(what: &'static str, value: &str) -> Result<(), ForgeError> {
    let invalid = |reason| ForgeError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value == "." || value == ".." {
        return Err(invalid("it is a relative path component"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "only letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_descriptions_are_kept() {
        let status = CommitStatus::new(
            StatusState::Success,
            "forgexec/execute",
            "Build passed in 3 s",
            None,
        );
        assert_eq!(status.description(), "Build passed in 3 s");
    }

    #[test]
    fn long_descriptions_are_cut_on_char_boundaries() {
        let exact = "é".repeat(140);
        assert_eq!(truncate_description(&exact), exact);
        let long = "é".repeat(141);
        let cut = truncate_description(&long);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), 139);
        let emoji = "🚀".repeat(300);
        let cut = truncate_description(&emoji);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.len() > 140, "bytes exceed chars: counted in chars");
    }

    #[test]
    fn a_long_command_is_shortened_and_the_outcome_kept() {
        let command = format!("make {}", "very-long-target ".repeat(20));
        let text = format!("test: `{}` exited 2", command.trim());
        let cut = truncate_description(&text);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS, "{cut}");
        assert!(cut.starts_with("test: `make very-long-target"), "{cut}");
        assert!(cut.ends_with("…` exited 2"), "{cut}");
        let timed_out = format!("setup: `{}` timed out after 10m0s", "x".repeat(300));
        let cut = truncate_description(&timed_out);
        assert!(cut.ends_with("…` timed out after 10m0s"), "{cut}");
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
        // A quoted part too short to give enough: the end is cut.
        let plain = format!("`ab` {}", "y".repeat(200));
        let cut = truncate_description(&plain);
        assert!(cut.starts_with("`ab` yyy") && cut.ends_with('…'), "{cut}");
    }

    #[test]
    fn control_characters_become_spaces() {
        assert_eq!(truncate_description("step 1\nfailed\t!"), "step 1 failed !");
    }

    #[test]
    fn status_serializes_as_the_github_api_wants() {
        let status = CommitStatus::new(
            StatusState::Failure,
            "forgexec/test",
            "2 tests failed",
            Some("https://logs.example/build.log".into()),
        );
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "state": "failure",
                "context": "forgexec/test",
                "description": "2 tests failed",
                "target_url": "https://logs.example/build.log"
            })
        );
        let pending = CommitStatus::new(StatusState::Pending, "c", "d", None);
        let json = serde_json::to_value(&pending).expect("json");
        assert_eq!(json["state"], "pending");
        assert_eq!(json["target_url"], serde_json::Value::Null);
    }

    #[test]
    fn api_path_segments_are_checked() {
        assert!(check_segment("owner", "octo-org").is_ok());
        assert!(check_segment("repository", "hello.world_2").is_ok());
        assert!(check_segment("commit", "0123abcdef").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b", "%2e"] {
            assert!(
                matches!(
                    check_segment("owner", bad),
                    Err(ForgeError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
