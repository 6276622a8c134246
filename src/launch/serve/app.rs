//! The credentials a build gets: a static token (`--token-file`), or a
//! GitHub App's installation token, minted per build and restricted to the
//! build's repository with `statuses: write` and `contents: read`. The App
//! signs an RS256 JWT with its private key (ring) to ask for it. Neither the
//! JWT nor a token is ever logged: both are [`Secret`]s.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};

use crate::secret::Secret;

/// How long a JWT is valid: GitHub's maximum is 10 minutes.
pub const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
/// How far back a JWT's `iat` is put, for clock drift (GitHub's advice).
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);

/// Largest App private key file read (an RSA-4096 PEM is about 3.3 KiB).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Problems with the App's credentials or with getting a token.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{path}: cannot read the App's private key: {source}")]
    ReadKey {
        path: PathBuf,
        source: crate::fsread::FsReadError,
    },
    #[error("{path}: not a PEM RSA private key (expected `BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the build has no App installation (the delivery carries no `installation.id`)")]
    NoInstallation,
    #[error("cannot sign the App's JWT")]
    Sign,
    #[error("POST {url}: {reason}")]
    Token { url: String, reason: String },
}

/// A GitHub App: its id and private key.
pub struct App {
    id: u64,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Reads the App's PEM private key (PKCS#1, as GitHub hands it out, or
    /// PKCS#8).
    pub fn load(id: u64, key_file: &Path) -> Result<App, AppError> {
        // An operator's path: a regular file (links followed), never a FIFO
        // or device that would hang start-up, and small.
        let pem =
            crate::fsread::read_regular(key_file, crate::fsread::Links::Follow, MAX_KEY_FILE_BYTES)
                .map_err(|source| AppError::ReadKey {
                    path: key_file.to_path_buf(),
                    source,
                })?;
        let bad = |reason: String| AppError::BadKey {
            path: key_file.to_path_buf(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(e.to_string()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(bad("not an RSA key".into())),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok(App {
            id,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The App's JWT at `now`: RS256, `iat` a minute back, `exp` within 10
    /// minutes, `iss` the App id.
    pub fn jwt(&self, now: SystemTime) -> Result<Secret, AppError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = json!({
            "iat": secs.saturating_sub(JWT_BACKDATE.as_secs()),
            "exp": secs + JWT_LIFETIME.as_secs(),
            "iss": self.id,
        });
        let claims = b64.encode(claims.to_string());
        let message = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AppError::Sign)?;
        Ok(Secret::new(format!("{message}.{}", b64.encode(signature))))
    }

    /// An installation token for one repository, with `statuses: write`
    /// and `contents: read` only.
    pub async fn installation_token(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        installation: u64,
        repo: &str,
    ) -> Result<Secret, AppError> {
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            api_url.trim_end_matches('/')
        );
        let failed = |reason: String| AppError::Token {
            url: url.clone(),
            reason,
        };
        let jwt = self.jwt(SystemTime::now())?;
        let resp = http
            .post(&url)
            .bearer_auth(jwt.expose())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .json(&json!({
                "repositories": [repo],
                "permissions": {"statuses": "write", "contents": "read"},
            }))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(failed(format!("HTTP {status} {message}")));
        }
        let token = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_string))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("the answer has no `token`".into()))?;
        Ok(Secret::new(token))
    }
}

/// Where a build's credential comes from.
#[derive(Debug)]
pub enum Credentials {
    None,
    Static(Secret),
    App(Box<App>),
}

impl Credentials {
    /// The token for a build of `repo` through `installation`.
    pub async fn token_for(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        installation: Option<u64>,
        repo: &str,
    ) -> Result<Option<Secret>, AppError> {
        match self {
            Credentials::None => Ok(None),
            Credentials::Static(token) => Ok(Some(token.clone())),
            Credentials::App(app) => {
                let id = installation.ok_or(AppError::NoInstallation)?;
                app.installation_token(http, api_url, id, repo)
                    .await
                    .map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_pem_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = App::load(1, &path).unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert!(matches!(
            App::load(1, &dir.path().join("missing")),
            Err(AppError::ReadKey { .. })
        ));
    }
}
