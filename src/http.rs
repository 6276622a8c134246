//! The HTTP client shared by the forge client and the artifact store: a
//! `ureq` agent that trusts Mozilla's roots (embedded, because build images
//! often have no CA store) plus an optional private CA, and a retry loop with
//! capped exponential backoff, full jitter, `Retry-After` and GitHub's rate
//! limits, per the transport-free [`policy`]. Network errors, 5xx, 429 and
//! rate limits are retried; other 4xx are final. HTTP error statuses become
//! [`HttpError::Status`] carrying the server's own message (the `message`
//! field of GitHub-style JSON errors, or a snippet of the body).

pub mod policy;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body, RequestBuilder};

pub use policy::{parse_retry_after, Decision, Failure, RetryPolicy};

use crate::run::output::Masker;

use crate::fsread::{self, FsReadError, Links};

/// Most bytes of an error response read to find the server's message.
pub const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// Most characters of a non-JSON error body quoted in an error.
const SNIPPET_CHARS: usize = 200;

/// A transport's error, whichever client carried the request.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of HTTP requests and of setting up the client, whichever
/// transport carried them.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error status.
    #[error("{method} {url}: HTTP {code} {message}")]
    Status {
        method: String,
        url: String,
        code: u16,
        /// The server's own message (GitHub's `message` plus its `errors`),
        /// or a snippet of the body, or the reason phrase.
        message: String,
        /// The wait the server asked for (`Retry-After`, or until its rate
        /// limit resets), if any.
        retry_after: Option<Duration>,
        /// GitHub's rate limit (a 403 or 429 that says when to come back).
        rate_limited: bool,
    },
    /// The request did not get an answer: connection refused or reset,
    /// timeout, name resolution failure. Retried. The source is the
    /// transport's own error (ureq's, or reqwest's in the launcher).
    #[error("{method} {url}: network error: {source}")]
    Network {
        method: String,
        url: String,
        #[source]
        source: BoxError,
    },
    /// The request cannot succeed by retrying: TLS verification failed, the
    /// URL is malformed, too many redirects.
    #[error("{method} {url}: {source}")]
    Request {
        method: String,
        url: String,
        #[source]
        source: BoxError,
    },
    /// A local file for the request (body source or download target) failed.
    #[error("{what} {}: {source}", path.display())]
    LocalIo {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The private CA file (`FORGE_CA_CERT`) cannot be read.
    #[error("cannot read the CA certificate file (FORGE_CA_CERT): {source}")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: FsReadError,
    },
    /// The private CA file is not usable PEM.
    #[error(
        "CA certificate file {} (FORGE_CA_CERT) is not valid: {reason}; \
         it must hold one or more PEM `-----BEGIN CERTIFICATE-----` blocks",
        path.display()
    )]
    CaFileInvalid { path: PathBuf, reason: String },
    /// Retries were exhausted; `last` is the final attempt's error.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<HttpError>,
    },
    /// The next wait would pass the request's time budget.
    #[error(
        "{last} (gave up after {attempts} attempt(s): waiting {:.0} s more would pass the {:.0} s budget)",
        wanted.as_secs_f64(),
        budget.as_secs_f64()
    )]
    OutOfTime {
        attempts: u32,
        wanted: Duration,
        budget: Duration,
        #[source]
        last: Box<HttpError>,
    },
}

impl HttpError {
    /// Wrap a transport error of `method url`, classified as retryable
    /// ([`HttpError::Network`]) or final ([`HttpError::Request`]).
    pub fn from_ureq(method: &str, url: &str, source: ureq::Error) -> HttpError {
        let method = method.to_string();
        let url = redact_url(url);
        if is_transient(&source) {
            HttpError::Network {
                method,
                url,
                source: Box::new(source),
            }
        } else {
            HttpError::Request {
                method,
                url,
                source: Box::new(source),
            }
        }
    }

    /// Whether another attempt may succeed: network errors, 5xx, 429 and
    /// rate limits.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Status {
                code, rate_limited, ..
            } => *rate_limited || *code == 429 || (500..600).contains(code),
            HttpError::Network { .. } => true,
            _ => false,
        }
    }

    /// The last attempt's error, looking through the retry loop's wrappers.
    pub fn last(&self) -> &HttpError {
        match self {
            HttpError::GaveUp { last, .. } | HttpError::OutOfTime { last, .. } => last.last(),
            other => other,
        }
    }

    /// The HTTP status code of the last attempt.
    pub fn status(&self) -> Option<u16> {
        match self.last() {
            HttpError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's message of the last attempt's status error.
    pub fn server_message(&self) -> Option<&str> {
        match self.last() {
            HttpError::Status { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The wait the server asked for after the last attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.last() {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// How long the forge's rate limit holds, when the last attempt hit it.
    pub fn rate_limit(&self) -> Option<Duration> {
        match self.last() {
            HttpError::Status {
                rate_limited: true,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(policy::MAX_WAIT)),
            _ => None,
        }
    }
}

/// Transport errors worth another attempt. TLS failures (rustls reports
/// them as I/O errors of kind `InvalidData`, e.g. an unknown issuer) are
/// final: the same certificate comes back next time.
fn is_transient(error: &ureq::Error) -> bool {
    if let ureq::Error::Io(io) = error {
        return io.kind() != std::io::ErrorKind::InvalidData;
    }
    matches!(
        error,
        ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
}

/// Query parameters whose values are credentials: presigned-URL
/// signatures (S3 `X-Amz-Signature`, `X-Amz-Credential`,
/// `X-Amz-Security-Token`; GCS `X-Goog-Signature`; Azure SAS `sig`), tokens,
/// keys and passwords. A parameter whose name (any case) contains one of
/// [`SECRET_PARAM_PARTS`] or is one of [`SECRET_PARAMS`] is redacted.
const SECRET_PARAM_PARTS: &[&str] = &[
    "signature",
    "token",
    "credential",
    "secret",
    "password",
    "passwd",
    "apikey",
    "api_key",
    "access_key",
    "private_key",
    "session",
];
const SECRET_PARAMS: &[&str] = &["sig", "key", "code", "auth", "pass", "pwd"];

/// A URL safe to show: user info becomes `***`, the values of query
/// parameters that carry credentials ([`SECRET_PARAM_PARTS`]) become `***`, and
/// the fragment is dropped. Text that is not a URL is returned as it is,
/// user info still redacted.
pub fn redact_url(url: &str) -> String {
    let (without_fragment, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = match without_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (without_fragment, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                _ if is_secret_param(param) => "***".to_string(),
                _ => param.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_param(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    SECRET_PARAMS.contains(&lower.as_str())
        || SECRET_PARAM_PARTS.iter().any(|part| lower.contains(part))
}

/// Whether a URL carries credentials: user info, or a query parameter
/// that [`redact_url`] would hide. Such a URL is never a status link.
pub fn has_credentials(url: &str) -> bool {
    redact_url(url) != url.split_once('#').map_or(url, |(base, _)| base)
}

/// The secrets in a URL's user info, for the masker: the password, or
/// the user name when there is no password (a token used as the user).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let secret = userinfo
        .split_once(':')
        .map_or(userinfo, |(_, password)| password);
    if secret.is_empty() {
        return Vec::new();
    }
    let mut secrets = vec![secret.to_string()];
    let decoded = percent_encoding::percent_decode_str(secret).decode_utf8_lossy();
    if decoded != secret {
        secrets.push(decoded.into_owned());
    }
    secrets
}

/// The shared HTTP client: one connection-pooling agent and a retry policy.
#[derive(Clone)]
pub struct HttpClient {
    agent: Agent,
    policy: RetryPolicy,
    /// Masks the build's secrets in what the retry loop logs.
    masker: Masker,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting Mozilla's roots and, when given, the PEM
    /// certificates of `extra_ca_pem` (`FORGE_CA_CERT`). Connect timeout
    /// 10 s, 60 s without progress on any read or write; HTTP error statuses
    /// are returned as responses for the caller to inspect.
    pub fn new(extra_ca_pem: Option<&Path>) -> Result<HttpClient, HttpError> {
        // The Mozilla roots always come from webpki-root-certs (ureq's own
        // copy, webpki-roots, is left out of the binary).
        let mut roots = match extra_ca_pem {
            Some(path) => load_pem_certificates(path)?,
            None => Vec::new(),
        };
        roots.extend(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
        );
        let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(roots)));
        let agent = Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .user_agent(concat!("forgexec/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .max_redirects(10)
            .build()
            .new_agent();
        Ok(HttpClient {
            agent,
            policy: RetryPolicy::default(),
            masker: Masker::default(),
        })
    }

    /// The same client masking these secrets in what it logs.
    pub fn masking(mut self, masker: Masker) -> HttpClient {
        self.masker = masker;
        self
    }

    /// The same client with another retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> HttpClient {
        self.policy = policy;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The underlying agent, for building requests in an attempt closure.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Run `attempt` until it succeeds, fails with a non-retryable error,
    /// the policy's attempts are spent or its budget would be passed,
    /// sleeping per the policy in between. Each call of `attempt` must build
    /// its request (and reopen its body source) afresh; its second argument
    /// is the time left in the budget, to bound the request with
    /// ([`within`]). `method` and `url` name the request in logs.
    pub fn retry<T>(
        &self,
        method: &str,
        url: &str,
        mut attempt: impl FnMut(&Agent, Option<Duration>) -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let mut rng = fastrand::Rng::new();
        let started = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let left = self.policy.left(started.elapsed());
            let error = match attempt(&self.agent, left) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let described = error.to_string();
            let wait = next_wait(&self.policy, tries, error, started, &mut rng)?;
            log_retry(
                &self.masker,
                (method, url),
                tries,
                &self.policy,
                &described,
                wait,
            );
            std::thread::sleep(wait);
        }
    }

    /// [`retry`](Self::retry) for requests whose response needs no further
    /// reading inside the retry loop: `send` performs one request; transport
    /// errors and error statuses are classified, and the first successful
    /// (below 400) response is returned.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        mut send: impl FnMut(&Agent, Option<Duration>) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, HttpError> {
        self.retry(method, url, |agent, left| {
            let response = send(agent, left).map_err(|e| HttpError::from_ureq(method, url, e))?;
            check_status(method, url, response)
        })
    }
}

/// After failed attempt number `tries` of a request begun at `started`:
/// the wait before the next one, or the error to return (the attempt's own
/// when it is final, wrapped when attempts or time ran out). Both clients'
/// retry loops decide here.
pub fn next_wait(
    policy: &RetryPolicy,
    tries: u32,
    error: HttpError,
    started: Instant,
    rng: &mut fastrand::Rng,
) -> Result<Duration, HttpError> {
    let failure = Failure {
        retryable: error.is_retryable(),
        rate_limited: error.rate_limit().is_some(),
        retry_after: error.retry_after(),
    };
    match policy.decide(tries, failure, started.elapsed(), rng) {
        Decision::Retry(wait) => Ok(wait),
        Decision::Final => Err(error),
        Decision::Exhausted => Err(HttpError::GaveUp {
            attempts: tries,
            last: Box::new(error),
        }),
        Decision::OutOfTime { wanted } => Err(HttpError::OutOfTime {
            attempts: tries,
            wanted,
            budget: policy.budget.unwrap_or_default(),
            last: Box::new(error),
        }),
    }
}

/// The log line of a retry, masked.
pub fn log_retry(
    masker: &Masker,
    (method, url): (&str, &str),
    tries: u32,
    policy: &RetryPolicy,
    error: &str,
    wait: Duration,
) {
    tracing::warn!(
        "{}",
        masker.mask_str(&format!(
            "{method} {}: attempt {tries} of {} failed ({error}); retrying in {:.1} s",
            redact_url(url),
            policy.max_attempts,
            wait.as_secs_f64()
        ))
    );
}

/// A request bounded to the time left in its budget, when there is one.
pub fn within<B>(request: RequestBuilder<B>, left: Option<Duration>) -> RequestBuilder<B> {
    match left {
        Some(left) => request.config().timeout_global(Some(left)).build(),
        None => request,
    }
}

/// Pass a response below 400 through; turn an error status into
/// [`HttpError::Status`] with the server's message and `Retry-After`.
pub fn check_status(
    method: &str,
    url: &str,
    mut response: Response<Body>,
) -> Result<Response<Body>, HttpError> {
    let status = response.status();
    if status.as_u16() < 400 {
        return Ok(response);
    }
    let headers = response.headers();
    let advice = policy::advise(
        status.as_u16(),
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        SystemTime::now(),
    );
    let mut body = Vec::new();
    // A body that cannot be read still leaves the status to report.
    let _ = response
        .body_mut()
        .as_reader()
        .take(ERROR_BODY_LIMIT)
        .read_to_end(&mut body);
    let message =
        error_message(&body).unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    Err(HttpError::Status {
        method: method.to_string(),
        url: redact_url(url),
        code: status.as_u16(),
        message,
        retry_after: advice.retry_after,
        rate_limited: advice.rate_limited,
    })
}

/// The message of an error body: GitHub's `message` followed by the
/// messages of its `errors` list (`Validation Failed: state is not included
/// in the list`), else a trimmed snippet of the text; `None` when empty.
pub fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(message) = json.get("message").and_then(|m| m.as_str()) {
            let details: Vec<String> = json
                .get("errors")
                .and_then(|e| e.as_array())
                .map(|errors| errors.iter().filter_map(describe_error_item).collect())
                .unwrap_or_default();
            return Some(if details.is_empty() {
                message.to_string()
            } else {
                format!("{message}: {}", details.join("; "))
            });
        }
    }
    let text = String::from_utf8_lossy(body);
    // An HTML error page: its title says it all (`409 Conflict`).
    if let Some(title) = html_title(&text) {
        return Some(title);
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    let mut snippet: String = text.chars().take(SNIPPET_CHARS).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    Some(snippet)
}

/// The text of an HTML page's `<title>`, whitespace-normalized, when
/// non-empty. The status code at its start (`409 Conflict`) is dropped, as
/// the error shows the code already.
fn html_title(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text
        .get(start..end)?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let title = match title.split_once(' ') {
        Some((code, rest)) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
            rest.to_string()
        }
        _ => title,
    };
    (!title.is_empty()).then_some(title)
}

/// One item of GitHub's `errors` list: its `message`, else `field code`.
fn describe_error_item(item: &serde_json::Value) -> Option<String> {
    if let Some(text) = item.as_str() {
        return Some(text.to_string());
    }
    if let Some(message) = item.get("message").and_then(|m| m.as_str()) {
        return Some(message.to_string());
    }
    let field = item.get("field").and_then(|f| f.as_str());
    let code = item.get("code").and_then(|c| c.as_str());
    match (field, code) {
        (Some(field), Some(code)) => Some(format!("{field} {code}")),
        (None, Some(code)) => Some(code.to_string()),
        _ => None,
    }
}

/// Largest `FORGE_CA_CERT` read (a full bundle of public roots is about
/// 250 KB).
pub const MAX_CA_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The certificates of a PEM file; at least one is required.
fn load_pem_certificates(path: &Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    let bytes = fsread::read_regular(path, Links::Follow, MAX_CA_FILE_BYTES).map_err(|source| {
        HttpError::CaFileRead {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(error) => {
                return Err(HttpError::CaFileInvalid {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(HttpError::CaFileInvalid {
            path: path.to_path_buf(),
            reason: "no certificate found".to_string(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_messages_are_extracted() {
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"Status","code":"custom","field":"state","message":"state is not included in the list"}],"documentation_url":"https://docs.github.com"}"#;
        assert_eq!(
            error_message(body).as_deref(),
            Some("Validation Failed: state is not included in the list")
        );
        assert_eq!(
            error_message(br#"{"message":"Bad credentials"}"#).as_deref(),
            Some("Bad credentials")
        );
        assert_eq!(
            error_message(
                br#"{"message":"Validation Failed","errors":[{"field":"sha","code":"missing"}]}"#
            )
            .as_deref(),
            Some("Validation Failed: sha missing")
        );
        assert_eq!(
            error_message(b"<html>\n  <body>bad gateway</body>\n</html>").as_deref(),
            Some("<html> <body>bad gateway</body> </html>")
        );
        assert_eq!(
            error_message(b"<html><head><title>409 Conflict</title></head><body>x</body></html>")
                .as_deref(),
            Some("Conflict")
        );
        assert_eq!(
            error_message(b"<HTML><TITLE>\n Service down \n</TITLE></HTML>").as_deref(),
            Some("Service down")
        );
        assert_eq!(error_message(b"  \n"), None);
        let long = "x".repeat(500);
        let snippet = error_message(long.as_bytes()).unwrap_or_default();
        assert_eq!(snippet.chars().count(), SNIPPET_CHARS + 1);
        assert!(snippet.ends_with('…'));
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact_url("https://user:pw@store.example/a/b?X-Signature=abc"),
            "https://***@store.example/a/b?X-Signature=***"
        );
        assert_eq!(
            redact_url(
                "https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20261206&X-Amz-Date=20261206T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=f00d"
            ),
            "https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Date=20261206T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=***"
        );
        assert_eq!(
            redact_url(
                "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=w&sig=abc%2Bdef#frag"
            ),
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=w&sig=***"
        );
        assert_eq!(
            redact_url("https://x/p?access_token=t&page=2&TOKEN"),
            "https://x/p?access_token=***&page=2&***"
        );
        assert!(has_credentials("http://u:p@h/x"));
        assert!(has_credentials("https://h/x?Signature=1"));
        assert!(!has_credentials("https://h/x?page=2#top"));
        assert_eq!(
            url_secrets("http://user:PASS%21word@h/x"),
            ["PASS%21word", "PASS!word"]
        );
        assert_eq!(url_secrets("https://ghp_tok3n@h/x"), ["ghp_tok3n"]);
        assert!(url_secrets("https://h/x?user:p@x").is_empty());
        assert_eq!(
            redact_url("http://127.0.0.1:80/repos/o/r"),
            "http://127.0.0.1:80/repos/o/r"
        );
    }

    #[test]
    fn retryable_classification() {
        let status = |code| HttpError::Status {
            method: "GET".into(),
            url: "u".into(),
            code,
            message: String::new(),
            retry_after: None,
            rate_limited: false,
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(422).is_retryable());
    }

    #[test]
    fn retry_stops_on_final_errors_and_after_max_attempts() {
        let client = HttpClient::new(None)
            .expect("client without extra CA")
            .with_retry_policy(RetryPolicy::new(3, Duration::ZERO, Duration::ZERO));
        let mut calls = 0;
        let result: Result<(), HttpError> = client.retry("GET", "http://x/", |_, _| {
            calls += 1;
            Err(HttpError::Status {
                method: "GET".into(),
                url: "http://x/".into(),
                code: 503,
                message: "down".into(),
                retry_after: None,
                rate_limited: false,
            })
        });
        assert_eq!(calls, 3);
        let error = result.expect_err("503 three times");
        assert!(matches!(error, HttpError::GaveUp { attempts: 3, .. }));
        assert_eq!(error.status(), Some(503));

        let mut calls = 0;
        let result: Result<(), HttpError> = client.retry("GET", "http://x/", |_, _| {
            calls += 1;
            Err(HttpError::Status {
                method: "GET".into(),
                url: "http://x/".into(),
                code: 404,
                message: "Not Found".into(),
                retry_after: None,
                rate_limited: false,
            })
        });
        assert_eq!(calls, 1);
        assert_eq!(result.expect_err("404").status(), Some(404));

        let mut calls = 0;
        let result = client.retry("GET", "http://x/", |_, _| {
            calls += 1;
            if calls < 2 {
                Err(HttpError::Status {
                    method: "GET".into(),
                    url: "http://x/".into(),
                    code: 502,
                    message: String::new(),
                    retry_after: None,
                    rate_limited: false,
                })
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.ok(), Some(2));
    }

    #[test]
    fn a_private_ca_pem_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("ca.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=forgexec test CA",
                "-keyout",
            ])
            .arg(dir.path().join("ca.key"))
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command is needed to make a test CA (apt-get install openssl)");
        assert!(status.success(), "openssl failed to make a test CA");
        HttpClient::new(Some(&cert)).expect("a PEM certificate loads");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let error = HttpClient::new(Some(&missing)).expect_err("missing file");
        assert!(matches!(error, HttpError::CaFileRead { .. }));
        assert!(error.to_string().contains("missing.pem"));

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let error = HttpClient::new(Some(&junk)).expect_err("junk file");
        assert!(matches!(error, HttpError::CaFileInvalid { .. }), "{error}");
        assert!(error.to_string().contains("junk.pem"));

        // A FIFO (or a device) is refused at once, never waited on.
        let fifo = dir.path().join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let error = HttpClient::new(Some(&fifo)).expect_err("a FIFO");
        assert!(
            matches!(&error, HttpError::CaFileRead { source, .. } if source.is_refusal()),
            "{error}"
        );
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let error = HttpClient::new(Some(Path::new("/dev/zero"))).expect_err("a device");
        assert!(error.to_string().contains("character device"), "{error}");
    }
}
