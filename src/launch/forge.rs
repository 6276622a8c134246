//! The launcher's forge client: download the `.forge.yml` at the head
//! commit through the contents API and post the `error` statuses of builds
//! that never reached forgexec. reqwest (rustls, async) carries the
//! requests; everything else is the executor's, so a forge behaves the same
//! to both binaries: the retry policy, `Retry-After` and GitHub's rate
//! limits ([`crate::http::policy`], [`crate::http::next_wait`]), the errors
//! ([`HttpError`] inside [`ForgeError`]), the forge's messages
//! ([`crate::http::error_message`]) and the statuses ([`CommitStatus`]).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde_json::Value;

pub use crate::forge::{CommitStatus, StatusState};
use crate::forge::{ContentsProblem, ForgeError};
use crate::http::policy::{advise, RetryPolicy, FINAL_STATUS_BUDGET};
use crate::http::{error_message, log_retry, next_wait, redact_url, HttpError};
use crate::run::output::Masker;
use crate::secret::Secret;

/// Most bytes of a `.forge.yml` answer read: the file's own limit, in
/// base64 with GitHub's line breaks.
const SPEC_ANSWER_LIMIT: usize = 2 * crate::spec::MAX_FILE_BYTES;

/// Most bytes of a commit's status list read (100 statuses of GitHub's
/// JSON are about 100 KB).
const STATUS_LIST_LIMIT: usize = 1 << 20;

/// The state of the first status of `context` in a status list (newest
/// first, as GitHub gives it); `None` when it has none.
pub fn newest_state_of(body: &[u8], context: &str) -> Result<Option<String>, serde_json::Error> {
    let list: Vec<Value> = serde_json::from_slice(body)?;
    Ok(list
        .iter()
        .find(|s| s.get("context").and_then(Value::as_str) == Some(context))
        .and_then(|s| s.get("state")?.as_str().map(str::to_string)))
}

/// A client for the GitHub-compatible forge API.
pub struct Forge {
    http: reqwest::Client,
    token: Option<Secret>,
    masker: Masker,
}

/// Outcome of a spec download that reached the server.
#[derive(Debug)]
pub enum SpecFetch {
    Found(Vec<u8>),
    /// The repository has no `.forge.yml` at that commit.
    Missing,
}

impl Forge {
    pub fn new(token: Option<Secret>) -> Result<Self, ForgeError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("forge-launch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ForgeError::Client(Box::new(e)))?;
        let masker = Masker::new(token.iter().map(Secret::expose));
        Ok(Forge {
            http,
            token,
            masker,
        })
    }

    /// Masks the token (and its encoded forms).
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// `GET {api}/repos/{owner}/{repo}/contents/.forge.yml?ref={sha}`; takes
    /// the raw media type or GitHub's JSON with base64 content.
    pub async fn fetch_spec(
        &self,
        api_url: &str,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<SpecFetch, ForgeError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/contents/.forge.yml?ref={sha}",
            api_url.trim_end_matches('/')
        );
        let url = url.as_str();
        let answer = self
            .retry("GET", url, RetryPolicy::default(), |left| async move {
                let request = self
                    .request(reqwest::Method::GET, url, left)
                    .header("Accept", "application/vnd.github.raw");
                let response = self.send("GET", url, request).await?;
                let is_json = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("json"));
                let body = read_bounded(response, SPEC_ANSWER_LIMIT + 1)
                    .await
                    .map_err(|e| transport_error("GET", url, e))?;
                Ok((is_json, body))
            })
            .await;
        let (is_json, body) = match answer {
            Ok(answer) => answer,
            Err(err) if err.status() == Some(404) => return Ok(SpecFetch::Missing),
            Err(err) => return Err(ForgeError::Http(err)),
        };
        let contents = |problem| ForgeError::Contents {
            url: redact_url(url),
            problem,
        };
        if body.len() > SPEC_ANSWER_LIMIT {
            return Err(contents(ContentsProblem::TooLarge {
                limit: SPEC_ANSWER_LIMIT,
            }));
        }
        if is_json {
            return decode_contents_json(&body)
                .map(SpecFetch::Found)
                .map_err(contents);
        }
        Ok(SpecFetch::Found(body))
    }

    /// Posts a commit status (the same JSON forgexec posts), retried within
    /// the final status's budget; a `target_url` that carries credentials
    /// is left out.
    pub async fn post_status(
        &self,
        status_url: &str,
        status: &CommitStatus,
    ) -> Result<(), ForgeError> {
        let mut status = status.clone();
        status.target_url = status
            .target_url
            .filter(|url| !crate::http::has_credentials(url));
        let body = serde_json::to_vec(&status).map_err(|e| ForgeError::Client(Box::new(e)))?;
        let policy = RetryPolicy::for_status(FINAL_STATUS_BUDGET);
        self.retry("POST", status_url, policy, |left| {
            let body = body.clone();
            async move {
                let request = self
                    .request(reqwest::Method::POST, status_url, left)
                    .header("Accept", "application/vnd.github+json")
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
                self.send("POST", status_url, request).await.map(drop)
            }
        })
        .await
        .map_err(ForgeError::Http)
    }

    /// The state of the newest status of `context` on `sha`
    /// (`GET {api}/repos/{owner}/{repo}/commits/{sha}/statuses`, newest
    /// first, the first 100), or `None` when it has none.
    pub async fn latest_state(
        &self,
        api_url: &str,
        owner: &str,
        repo: &str,
        sha: &str,
        context: &str,
    ) -> Result<Option<String>, ForgeError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/commits/{sha}/statuses?per_page=100",
            api_url.trim_end_matches('/')
        );
        let url = url.as_str();
        let body = self
            .retry("GET", url, RetryPolicy::default(), |left| async move {
                let request = self
                    .request(reqwest::Method::GET, url, left)
                    .header("Accept", "application/vnd.github+json");
                let response = self.send("GET", url, request).await?;
                read_bounded(response, STATUS_LIST_LIMIT)
                    .await
                    .map_err(|e| transport_error("GET", url, e))
            })
            .await
            .map_err(ForgeError::Http)?;
        newest_state_of(&body, context).map_err(|e| ForgeError::Contents {
            url: redact_url(url),
            problem: ContentsProblem::Json(e),
        })
    }

    /// A request with the token, bounded to the time left in its budget.
    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        left: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(left) = left {
            request = request.timeout(left);
        }
        request
    }

    /// Sends one request; an error status becomes [`HttpError::Status`]
    /// with the forge's message and its `Retry-After` or rate limit.
    async fn send(
        &self,
        method: &str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, HttpError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(method, url, e))?;
        let code = response.status();
        if code.as_u16() < 400 {
            return Ok(response);
        }
        let advice = {
            let headers = response.headers();
            advise(
                code.as_u16(),
                |name| headers.get(name).and_then(|v| v.to_str().ok()),
                SystemTime::now(),
            )
        };
        // A body that cannot be read still leaves the status to report.
        let body = read_bounded(response, crate::http::ERROR_BODY_LIMIT as usize)
            .await
            .unwrap_or_default();
        Err(HttpError::Status {
            method: method.to_string(),
            url: redact_url(url),
            code: code.as_u16(),
            message: error_message(&body)
                .unwrap_or_else(|| code.canonical_reason().unwrap_or("").to_string()),
            retry_after: advice.retry_after,
            rate_limited: advice.rate_limited,
        })
    }

    /// The executor's retry loop, on tokio's clock.
    async fn retry<T, F, Fut>(
        &self,
        method: &str,
        url: &str,
        policy: RetryPolicy,
        mut attempt: F,
    ) -> Result<T, HttpError>
    where
        F: FnMut(Option<Duration>) -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let mut rng = fastrand::Rng::new();
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let error = match attempt(policy.left(started.elapsed())).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let described = error.to_string();
            let wait = next_wait(&policy, tries, error, started, &mut rng)?;
            log_retry(
                &self.masker,
                (method, url),
                tries,
                &policy,
                &described,
                wait,
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// A reqwest error as a retryable [`HttpError::Network`] or a final
/// [`HttpError::Request`] (TLS verification, a malformed URL, redirects),
/// without the URL reqwest would quote (it may carry credentials).
fn transport_error(method: &str, url: &str, error: reqwest::Error) -> HttpError {
    let tls = {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut found = false;
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                found |= io.kind() == std::io::ErrorKind::InvalidData;
            }
            cause = err.source();
        }
        found
    };
    let transient =
        !tls && (error.is_timeout() || error.is_connect() || error.is_body() || error.is_request());
    let method = method.to_string();
    let url = redact_url(url);
    let source = Box::new(error.without_url());
    if transient {
        HttpError::Network {
            method,
            url,
            source,
        }
    } else {
        HttpError::Request {
            method,
            url,
            source,
        }
    }
}

/// At most `limit` bytes of a response body.
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// The file content of a contents-API JSON answer (base64 with GitHub's
/// line breaks, or plain text).
fn decode_contents_json(body: &[u8]) -> Result<Vec<u8>, ContentsProblem> {
    let v: Value = serde_json::from_slice(body).map_err(ContentsProblem::Json)?;
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or(ContentsProblem::NoContent)?;
    match v.get("encoding").and_then(Value::as_str) {
        Some("base64") => {
            let clean: Vec<u8> = content
                .bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(ContentsProblem::Base64)
        }
        Some("utf-8") | None => Ok(content.as_bytes().to_vec()),
        Some(other) => Err(ContentsProblem::Encoding(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_newest_status_of_a_context_decides() {
        let list = br#"[
            {"context": "forge/lint", "state": "success"},
            {"context": "forge/execute", "state": "pending"},
            {"context": "forge/execute", "state": "failure"}
        ]"#;
        assert_eq!(
            super::newest_state_of(list, "forge/execute").unwrap(),
            Some("pending".to_string())
        );
        assert_eq!(super::newest_state_of(list, "forge/other").unwrap(), None);
        assert_eq!(
            super::newest_state_of(b"[]", "forge/execute").unwrap(),
            None
        );
        assert!(super::newest_state_of(b"{\"message\": 1}", "x").is_err());
        assert!(super::newest_state_of(b"[{\"context\": ", "x").is_err());
    }

    use super::*;

    #[test]
    fn reads_contents_json_as_github_wraps_it() {
        let body = br#"{"type":"file","encoding":"base64","content":"aW1h\nZ2U6IGJ1c3lib3gK\n"}"#;
        assert_eq!(decode_contents_json(body).unwrap(), b"image: busybox\n");
        let one = br#"{"encoding":"base64","content":"YQ==\n"}"#;
        assert_eq!(decode_contents_json(one).unwrap(), b"a");
        assert!(matches!(
            decode_contents_json(br#"{"type":"dir"}"#),
            Err(ContentsProblem::NoContent)
        ));
        for bad in [
            &br#"{"encoding":"base64","content":"Y"}"#[..],
            br#"{"encoding":"base64","content":"Y!=="}"#,
        ] {
            assert!(matches!(
                decode_contents_json(bad),
                Err(ContentsProblem::Base64(_))
            ));
        }
        assert!(matches!(
            decode_contents_json(br#"{"encoding":"gzip","content":"x"}"#),
            Err(ContentsProblem::Encoding(_))
        ));
        assert!(matches!(
            decode_contents_json(b"not json"),
            Err(ContentsProblem::Json(_))
        ));
    }
}
