//! The launcher's forge API client (reqwest, rustls): download the
//! `.forge.yml` at the head commit through the contents API and post the
//! `error` statuses of builds that never reached forgexec.

use std::time::Duration;

use serde_json::Value;

pub use crate::forge::{CommitStatus, StatusState};

use super::LaunchError;
use crate::secret::Secret;

/// forgexec's default `FORGE_API_URL`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The commit status context of an action, as forgexec posts it.
pub fn status_context(action: &str) -> String {
    format!("forge/{action}")
}

/// A small client for the GitHub-compatible forge API.
pub struct Forge {
    http: reqwest::Client,
    token: Option<Secret>,
}

/// Outcome of a spec download that reached the server.
#[derive(Debug)]
pub enum SpecFetch {
    Found(Vec<u8>),
    /// The repository has no `.forge.yml` at that commit.
    Missing,
}

impl Forge {
    pub fn new(token: Option<Secret>) -> Result<Self, LaunchError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("forge-launch/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| LaunchError::Forge(format!("cannot build the HTTP client: {e}")))?;
        Ok(Forge { http, token })
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => req.bearer_auth(token.expose()),
            None => req,
        }
    }

    /// `GET {api}/repos/{owner}/{repo}/contents/.forge.yml?ref={sha}`; takes
    /// the raw media type or GitHub's JSON with base64 content.
    pub async fn fetch_spec(
        &self,
        api_url: &str,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<SpecFetch, LaunchError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/contents/.forge.yml?ref={sha}",
            api_url.trim_end_matches('/')
        );
        let resp = self
            .auth(self.http.get(&url))
            .header("Accept", "application/vnd.github.raw")
            .send()
            .await
            .map_err(|e| LaunchError::Forge(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(SpecFetch::Missing);
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let body = resp
            .bytes()
            .await
            .map_err(|e| LaunchError::Forge(format!("GET {url}: reading the body: {e}")))?;
        if !status.is_success() {
            return Err(LaunchError::Forge(format!(
                "GET {url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        if is_json {
            return decode_contents_json(&body)
                .map(SpecFetch::Found)
                .map_err(|reason| LaunchError::Forge(format!("GET {url}: {reason}")));
        }
        Ok(SpecFetch::Found(body.to_vec()))
    }

    /// Posts a commit status (the same JSON forgexec posts).
    pub async fn post_status(
        &self,
        status_url: &str,
        status: &CommitStatus,
    ) -> Result<(), LaunchError> {
        let resp = self
            .auth(self.http.post(status_url))
            .header("Accept", "application/vnd.github+json")
            .json(status)
            .send()
            .await
            .map_err(|e| LaunchError::Forge(format!("POST {status_url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(LaunchError::Forge(format!(
                "POST {status_url}: HTTP {}",
                resp.status()
            )));
        }
        Ok(())
    }
}

/// The file content of a contents-API JSON answer.
fn decode_contents_json(body: &[u8]) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or("the answer has no `content`")?;
    match v.get("encoding").and_then(Value::as_str) {
        Some("base64") => base64_decode(content).ok_or_else(|| "invalid base64 content".into()),
        Some("utf-8") | None => Ok(content.as_bytes().to_vec()),
        Some(other) => Err(format!("unsupported content encoding {other:?}")),
    }
}

/// Standard base64 with padding; whitespace (GitHub wraps lines) ignored.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if clean.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_as_github_wraps_it() {
        assert_eq!(
            base64_decode("aW1hZ2U6IGJ1c3lib3gK").unwrap(),
            b"image: busybox\n"
        );
        assert_eq!(base64_decode("YQ==\n").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("Y!==").is_none());
    }

    #[test]
    fn reads_contents_json() {
        let body = br#"{"type":"file","encoding":"base64","content":"aW1h\nZ2U6IGJ1c3lib3gK\n"}"#;
        assert_eq!(decode_contents_json(body).unwrap(), b"image: busybox\n");
        assert!(decode_contents_json(br#"{"type":"dir"}"#).is_err());
    }
}
