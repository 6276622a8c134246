//! Reaching the daemon of the node that runs a build task: the daemon we
//! already talk to when the task is on that node, otherwise
//! `tcp://ADDR:PORT` from the node's address with mutual TLS. Plain TCP is
//! refused unless explicitly allowed, because an open daemon port is remote
//! root.

use std::path::{Path, PathBuf};

use bollard::{Docker, API_DEFAULT_VERSION};

use super::LaunchError;

/// Default port of a TLS-protected daemon.
pub const TLS_PORT: u16 = 2376;
/// Seconds before a non-streaming request to a daemon gives up.
pub const REQUEST_TIMEOUT: u64 = 120;

/// How to reach node daemons (the `--tls-*`, `--node-port` and
/// `--insecure-tcp` flags, and `DOCKER_CERT_PATH`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAccess {
    pub port: Option<u16>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `DOCKER_CERT_PATH`, else `~/.docker`: where `ca.pem`, `cert.pem` and
    /// `key.pem` are looked up when the flags do not name them.
    pub cert_dir: Option<PathBuf>,
    pub insecure_tcp: bool,
}

/// The three PEM files of mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the task's container is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The daemon the launcher is already connected to.
    Local,
    Tls {
        address: String,
        files: TlsFiles,
    },
    Plain {
        address: String,
    },
}

impl NodeAccess {
    /// The cert directory from the environment, Docker's convention.
    pub fn default_cert_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CERT_PATH").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker"))
    }

    /// The TLS files: each flag, else `{cert_dir}/{ca,cert,key}.pem`.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let pick = |flag: &Option<PathBuf>, name: &str| {
            flag.clone()
                .or_else(|| self.cert_dir.as_ref().map(|d| d.join(name)))
        };
        Some(TlsFiles {
            ca: pick(&self.tls_ca, "ca.pem")?,
            cert: pick(&self.tls_cert, "cert.pem")?,
            key: pick(&self.tls_key, "key.pem")?,
        })
    }
}

/// Decides how to reach the daemon running a task on `task_node`, given the
/// node id of the daemon we talk to and the task node's address.
pub fn select_endpoint(
    task_node: &str,
    local_node: &str,
    node_addr: Option<&str>,
    access: &NodeAccess,
) -> Result<Endpoint, LaunchError> {
    if task_node == local_node {
        return Ok(Endpoint::Local);
    }
    let refuse = |reason: String| LaunchError::NodeAccess {
        node: task_node.to_string(),
        reason,
    };
    let host = node_addr
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "0.0.0.0")
        .ok_or_else(|| refuse("the swarm reports no address for this node".into()))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let port = access.port.unwrap_or(TLS_PORT);
    let address = format!("tcp://{host}:{port}");
    if access.insecure_tcp {
        return Ok(Endpoint::Plain { address });
    }
    let files = access.tls_files().ok_or_else(|| {
        refuse("no TLS client certificate: set DOCKER_CERT_PATH or pass --tls-ca, --tls-cert and --tls-key".into())
    })?;
    let missing: Vec<String> = [&files.ca, &files.cert, &files.key]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "refusing to reach {address} without mutual TLS: missing {}; pass --tls-ca/--tls-cert/--tls-key (or set DOCKER_CERT_PATH), or --insecure-tcp if the daemon port is firewalled",
            missing.join(", ")
        )));
    }
    Ok(Endpoint::Tls { address, files })
}

/// The daemon the launcher manages the swarm through (`DOCKER_HOST` or the
/// local socket), with the API version negotiated down to the daemon's.
pub async fn connect_manager() -> Result<Docker, LaunchError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| LaunchError::docker("connecting to the daemon", e))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| LaunchError::docker("negotiating the API version", e))
}

/// Connects to the endpoint (`local` is returned for [`Endpoint::Local`]).
pub async fn connect(endpoint: &Endpoint, local: &Docker) -> Result<Docker, LaunchError> {
    let (docker, address) = match endpoint {
        Endpoint::Local => return Ok(local.clone()),
        Endpoint::Tls { address, files } => (
            check_pem_files(address, files).and_then(|()| {
                Docker::connect_with_ssl(
                    address,
                    &files.key,
                    &files.cert,
                    &files.ca,
                    REQUEST_TIMEOUT,
                    API_DEFAULT_VERSION,
                )
                .map_err(|e| LaunchError::docker(format!("connecting to {address} with TLS"), e))
            })?,
            address,
        ),
        Endpoint::Plain { address } => (
            Docker::connect_with_http(address, REQUEST_TIMEOUT, API_DEFAULT_VERSION)
                .map_err(|e| LaunchError::docker(format!("connecting to {address}"), e))?,
            address,
        ),
    };
    docker
        .negotiate_version()
        .await
        .map_err(|e| LaunchError::docker(format!("negotiating the API version with {address}"), e))
}

/// bollard reads the client certificate and key only during the handshake
/// and silently sends none when they do not parse, so check them first.
fn check_pem_files(address: &str, files: &TlsFiles) -> Result<(), LaunchError> {
    for (path, label, what) in [
        (&files.ca, "CERTIFICATE", "--tls-ca (CA certificate)"),
        (
            &files.cert,
            "CERTIFICATE",
            "--tls-cert (client certificate)",
        ),
        (&files.key, "PRIVATE KEY", "--tls-key (client key)"),
    ] {
        let text = std::fs::read_to_string(path).map_err(|e| LaunchError::Docker {
            action: format!("connecting to {address} with TLS"),
            message: format!("cannot read {what} {}: {e}", path.display()),
        })?;
        if !text.contains("-----BEGIN ") || !text.contains(label) {
            return Err(LaunchError::Docker {
                action: format!("connecting to {address} with TLS"),
                message: format!("{what} {} holds no PEM {label}", path.display()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> (tempfile::TempDir, NodeAccess) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "pem").unwrap();
        }
        let access = NodeAccess {
            cert_dir: Some(dir.path().to_path_buf()),
            ..NodeAccess::default()
        };
        (dir, access)
    }

    #[test]
    fn same_node_uses_the_local_daemon() {
        let e = select_endpoint("n1", "n1", None, &NodeAccess::default()).unwrap();
        assert_eq!(e, Endpoint::Local);
    }

    #[test]
    fn remote_node_uses_tls_from_the_cert_dir_on_2376() {
        let (dir, access) = certs();
        let e = select_endpoint("n2", "n1", Some("10.0.0.7"), &access).unwrap();
        assert_eq!(
            e,
            Endpoint::Tls {
                address: "tcp://10.0.0.7:2376".into(),
                files: TlsFiles {
                    ca: dir.path().join("ca.pem"),
                    cert: dir.path().join("cert.pem"),
                    key: dir.path().join("key.pem"),
                }
            }
        );
    }

    #[test]
    fn flags_override_the_cert_dir_file_by_file() {
        let (dir, mut access) = certs();
        let other = dir.path().join("other-ca.pem");
        std::fs::write(&other, "pem").unwrap();
        access.tls_ca = Some(other.clone());
        access.port = Some(3376);
        let Endpoint::Tls { address, files } =
            select_endpoint("n2", "n1", Some("fd00::7"), &access).unwrap()
        else {
            panic!("expected TLS");
        };
        assert_eq!(address, "tcp://[fd00::7]:3376");
        assert_eq!(files.ca, other);
        assert_eq!(files.key, dir.path().join("key.pem"));
    }

    #[test]
    fn refuses_plain_tcp_without_certificates() {
        let access = NodeAccess {
            cert_dir: Some(PathBuf::from("/nonexistent/certs")),
            ..NodeAccess::default()
        };
        let err = select_endpoint("n2", "n1", Some("10.0.0.7"), &access).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("refusing"), "{msg}");
        assert!(msg.contains("/nonexistent/certs/ca.pem"), "{msg}");
        assert!(msg.contains("--insecure-tcp"), "{msg}");
    }

    #[test]
    fn insecure_tcp_is_explicit() {
        let access = NodeAccess {
            insecure_tcp: true,
            port: Some(2375),
            ..NodeAccess::default()
        };
        let e = select_endpoint("n2", "n1", Some("10.0.0.7"), &access).unwrap();
        assert_eq!(
            e,
            Endpoint::Plain {
                address: "tcp://10.0.0.7:2375".into()
            }
        );
    }

    #[test]
    fn a_node_without_address_is_an_error() {
        let (_dir, access) = certs();
        assert!(select_endpoint("n2", "n1", Some("0.0.0.0"), &access).is_err());
        assert!(select_endpoint("n2", "n1", None, &access).is_err());
    }
}
