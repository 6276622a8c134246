//! The HTTP client shared by the forge client and the artifact store: a
//! `ureq` agent that trusts Mozilla's roots (embedded, because build images
//! often have no CA store) plus an optional private CA, and a retry loop with
//! capped exponential backoff, full jitter and `Retry-After`. Network errors,
//! 5xx and 429 are retried; other 4xx are final. HTTP error statuses become
//! [`HttpError::Status`] carrying the server's own message (the `message`
//! field of GitHub-style JSON errors, or a snippet of the body).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use crate::fsread::{self, FsReadError, Links};

/// Most bytes of an error response read to find the server's message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// Most characters of a non-JSON error body quoted in an error.
const SNIPPET_CHARS: usize = 200;

/// Errors of HTTP requests and of setting up the client.
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
        /// The `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer: connection refused or reset,
    /// timeout, name resolution failure. Retried.
    #[error("{method} {url}: network error: {source}")]
    Network {
        method: String,
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The request cannot succeed by retrying: TLS verification failed, the
    /// URL is malformed, too many redirects.
    #[error("{method} {url}: {source}")]
    Request {
        method: String,
        url: String,
        #[source]
        source: ureq::Error,
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

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Status { code, .. } => *code == 429 || (500..600).contains(code),
            HttpError::Network { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status code, looking through [`HttpError::GaveUp`].
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { code, .. } => Some(*code),
            HttpError::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The server's message of a status error, looking through
    /// [`HttpError::GaveUp`].
    pub fn server_message(&self) -> Option<&str> {
        match self {
            HttpError::Status { message, .. } => Some(message),
            HttpError::GaveUp { last, .. } => last.server_message(),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
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

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Ceiling of the first backoff; doubles with each retry.
    pub base_delay: Duration,
    /// Cap of any single wait, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, 500 ms base, 30 s cap: about a minute of patience for
    /// a forge or store that restarts.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub fn new(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay,
            max_delay,
        }
    }

    /// The upper bound of the jittered wait after failed attempt number
    /// `retry` (0 for the wait after the first attempt):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before the next attempt: the server's `Retry-After` when it
    /// gave one, else a uniformly random duration up to
    /// [`backoff_ceiling`](Self::backoff_ceiling) (full jitter); capped at
    /// `max_delay` either way.
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.max_delay),
            None => {
                let ceiling = self.backoff_ceiling(retry).as_millis() as u64;
                Duration::from_millis(rng.u64(0..=ceiling))
            }
        }
    }
}

/// Parse a `Retry-After` value: delay seconds or an HTTP-date (RFC 9110
/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`), measured from `now`.
/// A date in the past means no wait; unparsable values are ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parse an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut parts = value.split_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour: u64 = clock.next()?.parse().ok()?;
    let minute: u64 = clock.next()?.parse().ok()?;
    let second: u64 = clock.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A URL safe to log: user info replaced by `***`, query string dropped
/// (it may hold a signature).
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => without_query.to_string(),
    }
}

/// The shared HTTP client: one connection-pooling agent and a retry policy.
#[derive(Clone)]
pub struct HttpClient {
    agent: Agent,
    policy: RetryPolicy,
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
        })
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

    /// Run `attempt` until it succeeds, fails with a non-retryable error or
    /// the policy's attempts are spent, sleeping per the policy in between.
    /// Each call of `attempt` must build its request (and reopen its body
    /// source) afresh. `method` and `url` name the request in logs.
    pub fn retry<T>(
        &self,
        method: &str,
        url: &str,
        mut attempt: impl FnMut(&Agent) -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let mut rng = fastrand::Rng::new();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let error = match attempt(&self.agent) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            if tries >= self.policy.max_attempts {
                return Err(HttpError::GaveUp {
                    attempts: tries,
                    last: Box::new(error),
                });
            }
            let wait = self.policy.delay(tries - 1, error.retry_after(), &mut rng);
            tracing::warn!(
                "{method} {}: attempt {tries} of {} failed ({error}); retrying in {:.1} s",
                redact_url(url),
                self.policy.max_attempts,
                wait.as_secs_f64()
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
        mut send: impl FnMut(&Agent) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, HttpError> {
        self.retry(method, url, |agent| {
            let response = send(agent).map_err(|e| HttpError::from_ureq(method, url, e))?;
            check_status(method, url, response)
        })
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
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
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
        retry_after,
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

    fn policy() -> RetryPolicy {
        RetryPolicy::new(6, Duration::from_millis(500), Duration::from_secs(30))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.backoff_ceiling(0), Duration::from_millis(500));
        assert_eq!(p.backoff_ceiling(1), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(3), Duration::from_secs(4));
        assert_eq!(p.backoff_ceiling(6), Duration::from_secs(30));
        assert_eq!(p.backoff_ceiling(200), Duration::from_secs(30));
    }

    #[test]
    fn jittered_delay_stays_within_the_ceiling_and_varies() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(2, None, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads the waits");
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7)), &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:50:07 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Tue, 29 Feb 2000 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(951_782_400))
        );
    }

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
            redact_url("https://user:pw@store.example/a/b?X-Sig=abc"),
            "https://***@store.example/a/b"
        );
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
        let result: Result<(), HttpError> = client.retry("GET", "http://x/", |_| {
            calls += 1;
            Err(HttpError::Status {
                method: "GET".into(),
                url: "http://x/".into(),
                code: 503,
                message: "down".into(),
                retry_after: None,
            })
        });
        assert_eq!(calls, 3);
        let error = result.expect_err("503 three times");
        assert!(matches!(error, HttpError::GaveUp { attempts: 3, .. }));
        assert_eq!(error.status(), Some(503));

        let mut calls = 0;
        let result: Result<(), HttpError> = client.retry("GET", "http://x/", |_| {
            calls += 1;
            Err(HttpError::Status {
                method: "GET".into(),
                url: "http://x/".into(),
                code: 404,
                message: "Not Found".into(),
                retry_after: None,
            })
        });
        assert_eq!(calls, 1);
        assert_eq!(result.expect_err("404").status(), Some(404));

        let mut calls = 0;
        let result = client.retry("GET", "http://x/", |_| {
            calls += 1;
            if calls < 2 {
                Err(HttpError::Status {
                    method: "GET".into(),
                    url: "http://x/".into(),
                    code: 502,
                    message: String::new(),
                    retry_after: None,
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
