//! Registry credentials (`--registry-auth FILE`): a Docker client config
//! (`config.json` as `docker login` writes it, its `auths` map) from which
//! the launcher takes the entry of a build image's registry and hands it to
//! the swarm the Docker way: the `X-Registry-Auth` header of service
//! creation (the swarm passes it to the node that pulls), of the registry
//! inspection and of sidecar pulls. Credentials never enter a service
//! spec's environment or labels.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use bollard::auth::DockerCredentials;

use super::LaunchError;
use crate::fsread::{self, Links};
use crate::secret::Secret;

/// Largest credentials file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The key Docker Hub's credentials have in a client config.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// One registry's login.
#[derive(Debug, Clone)]
struct Login {
    username: String,
    password: Secret,
}

/// The logins of a `--registry-auth` file, by registry host.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    logins: HashMap<String, Login>,
}

const FLAG: &str = "--registry-auth";

impl RegistryAuth {
    /// Reads a Docker client config: `{"auths": {"HOST": {"auth":
    /// base64("USER:PASSWORD")}}}` (or `username` and `password` fields).
    pub fn load(path: &Path) -> Result<RegistryAuth, LaunchError> {
        let bytes = fsread::read_regular(path, Links::Follow, MAX_FILE_BYTES)?;
        Self::parse(&bytes).map_err(|reason| LaunchError::Flag {
            flag: FLAG,
            value: path.display().to_string(),
            reason,
        })
    }

    /// Parses the file's bytes; the reason on error never quotes them.
    pub fn parse(bytes: &[u8]) -> Result<RegistryAuth, String> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let config: Config = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "not a Docker client config (JSON with `auths`): line {}, column {}",
                e.line(),
                e.column()
            )
        })?;
        let mut logins = HashMap::new();
        for (registry, entry) in config.auths {
            let (username, password) = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| format!("the `auth` of {registry:?} is not base64 of USER:PASSWORD"))?;
                    let (user, pass) = decoded
                        .split_once(':')
                        .ok_or_else(|| format!("the `auth` of {registry:?} is not base64 of USER:PASSWORD"))?;
                    (user.to_string(), pass.to_string())
                }
                (_, Some(user), Some(pass)) => (user, pass),
                _ => {
                    return Err(format!(
                        "{registry:?} has neither `auth` nor `username` and `password` (credential helpers are not read: write the login into the file)"
                    ))
                }
            };
            logins.insert(
                host_key(&registry),
                Login {
                    username,
                    password: Secret::new(password),
                },
            );
        }
        if logins.is_empty() {
            return Err("it holds no login under `auths`".into());
        }
        Ok(RegistryAuth { logins })
    }

    /// The passwords, for the masker.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.logins.values().map(|l| &l.password)
    }

    /// The credentials for pulling `image`, if the file has its registry.
    pub fn for_image(&self, image: &str) -> Option<DockerCredentials> {
        let registry = registry_of(image);
        let login = self.logins.get(&registry)?;
        Some(DockerCredentials {
            username: Some(login.username.clone()),
            password: Some(login.password.expose().to_string()),
            serveraddress: Some(if registry == host_key(DOCKER_HUB) {
                DOCKER_HUB.to_string()
            } else {
                registry
            }),
            ..Default::default()
        })
    }
}

/// The registry host of an image reference, as Docker reads it: the first
/// path component when it has a `.` or `:` or is `localhost`, else Docker
/// Hub.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            first.to_ascii_lowercase()
        }
        _ => host_key(DOCKER_HUB),
    }
}

/// A config key (`https://host:port/v1/`, `host:port`) as a bare host.
fn host_key(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn picks_the_login_of_the_images_registry() {
        let file = format!(
            r#"{{"auths": {{
                "10.0.0.2:5001": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "p2"}},
                "https://ghcr.io": {{"auth": "{}"}}
            }}, "credsStore": "desktop"}}"#,
            b64("ci:s3cret:with:colons"),
            b64("gh:p3")
        );
        let auth = RegistryAuth::parse(file.as_bytes()).unwrap();
        let c = auth.for_image("10.0.0.2:5001/team/app:1").unwrap();
        assert_eq!(c.username.as_deref(), Some("ci"));
        assert_eq!(c.password.as_deref(), Some("s3cret:with:colons"));
        assert_eq!(c.serveraddress.as_deref(), Some("10.0.0.2:5001"));
        let hub = auth.for_image("busybox:1.36").unwrap();
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert_eq!(hub.serveraddress.as_deref(), Some(DOCKER_HUB));
        assert!(auth.for_image("library/debian").is_some());
        assert_eq!(
            auth.for_image("GHCR.io/o/i@sha256:00")
                .and_then(|c| c.username),
            Some("gh".into())
        );
        assert!(auth.for_image("quay.io/o/i").is_none());
        assert!(auth.for_image("10.0.0.2:5000/team/app").is_none());
        assert_eq!(auth.secrets().count(), 3);
    }

    #[test]
    fn registry_hosts_as_docker_reads_them() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("team/app:1"), "docker.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
        assert_eq!(
            registry_of("Registry.Example.com/a/b"),
            "registry.example.com"
        );
    }

    #[test]
    fn bad_files_are_refused_without_quoting_them() {
        for (bytes, want) in [
            (&b"not json s3cret"[..], "not a Docker client config"),
            (br#"{"auths": {}}"#, "no login"),
            (br#"{"credsStore": "pass"}"#, "no login"),
            (br#"{"auths": {"r:1": {}}}"#, "credential helpers"),
            (br#"{"auths": {"r:1": {"auth": "!!!"}}}"#, "not base64"),
        ] {
            let err = RegistryAuth::parse(bytes).unwrap_err();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        let no_colon = format!(r#"{{"auths": {{"r:1": {{"auth": "{}"}}}}}}"#, b64("user"));
        assert!(RegistryAuth::parse(no_colon.as_bytes())
            .unwrap_err()
            .contains("USER:PASSWORD"));
    }
}
