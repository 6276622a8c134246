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

/// The node label that names a node's daemon (`tcp://HOST:PORT`),
/// overriding the address the swarm reports.
pub const DAEMON_LABEL: &str = "forge.daemon";

/// What the swarm says about where a node is: its host name, the address
/// it reports (`Status.Addr`, else the manager address) and the
/// [`DAEMON_LABEL`] label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddress {
    pub hostname: Option<String>,
    pub addr: Option<String>,
    pub daemon_label: Option<String>,
}

impl NodeAddress {
    /// Reads a node as the swarm reports it.
    pub fn of(node: &bollard::models::Node) -> NodeAddress {
        let status = node
            .status
            .as_ref()
            .and_then(|s| s.addr.clone())
            .filter(|a| usable_host(a));
        let manager = || {
            node.manager_status
                .as_ref()
                .and_then(|m| m.addr.as_deref())
                .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        };
        NodeAddress {
            hostname: node.description.as_ref().and_then(|d| d.hostname.clone()),
            addr: status
                .or_else(manager)
                .or_else(|| node.status.as_ref().and_then(|s| s.addr.clone())),
            daemon_label: node
                .spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(DAEMON_LABEL).cloned()),
        }
    }
}

/// Whether a reported node address can reach the node from elsewhere:
/// `0.0.0.0` and loopback addresses name no particular machine.
fn usable_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_unspecified() && !ip.is_loopback(),
        Err(_) => host != "localhost",
    }
}

/// Decides how to reach the daemon running a task on `task_node`, given the
/// node id of the daemon we talk to and where the swarm says the task's
/// node is: the [`DAEMON_LABEL`] label, else its usable address on the
/// daemon port.
pub fn select_endpoint(
    task_node: &str,
    local_node: &str,
    node: &NodeAddress,
    access: &NodeAccess,
) -> Result<Endpoint, LaunchError> {
    if task_node == local_node {
        return Ok(Endpoint::Local);
    }
    let shown = match &node.hostname {
        Some(name) if !name.is_empty() && name != task_node => format!("{name} ({task_node})"),
        _ => task_node.to_string(),
    };
    let refuse = |reason: String| LaunchError::NodeAccess {
        node: shown.clone(),
        reason,
    };
    let address = match node.daemon_label.as_deref() {
        Some(label) => daemon_from_label(label, access).ok_or_else(|| {
            refuse(format!(
                "its label {DAEMON_LABEL}={label:?} is not a daemon address; set it to tcp://HOST:PORT, e.g. `docker node update --label-add {DAEMON_LABEL}=tcp://10.0.0.7:{TLS_PORT} {task_node}`"
            ))
        })?,
        None => {
            let host = node
                .addr
                .as_deref()
                .map(str::trim)
                .filter(|a| usable_host(a))
                .ok_or_else(|| {
                    let reported = match node.addr.as_deref().map(str::trim) {
                        Some(a) if !a.is_empty() => format!("the swarm reports its address as {a}, which does not reach it"),
                        _ => "the swarm reports no address for it".to_string(),
                    };
                    refuse(format!(
                        "{reported}; set the node label {DAEMON_LABEL} to its daemon's address: `docker node update --label-add {DAEMON_LABEL}=tcp://HOST:{TLS_PORT} {task_node}`"
                    ))
                })?;
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let port = access.port.unwrap_or(TLS_PORT);
            format!("tcp://{host}:{port}")
        }
    };
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

/// `tcp://HOST[:PORT]` (or `HOST[:PORT]`) from the [`DAEMON_LABEL`] label,
/// with the daemon port when the label names none; `None` when it names no
/// usable host.
fn daemon_from_label(label: &str, access: &NodeAccess) -> Option<String> {
    let rest = label.trim();
    let rest = rest.strip_prefix("tcp://").unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{host}]"), port)
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return None,
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (rest.to_string(), None),
        }
    };
    // The operator named this host on purpose: loopback is allowed (a
    // tunnel, a daemon beside the launcher), only "any address" is not.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty()
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    {
        return None;
    }
    let port: u16 = match port {
        Some(port) => port.parse().ok().filter(|p| *p != 0)?,
        None => access.port.unwrap_or(TLS_PORT),
    };
    Some(format!("tcp://{host}:{port}"))
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

/// The swarm node id of the daemon `docker` talks to (empty when it is in
/// no swarm): what [`crate::launch::swarm::node_daemon`] compares a task's
/// node with.
pub async fn local_node_id(docker: &Docker) -> Result<String, LaunchError> {
    Ok(docker
        .info()
        .await
        .map_err(|e| LaunchError::docker("reading the daemon's info", e))?
        .swarm
        .and_then(|s| s.node_id)
        .unwrap_or_default())
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

    fn at(addr: &str) -> NodeAddress {
        NodeAddress {
            addr: Some(addr.into()),
            ..NodeAddress::default()
        }
    }

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
        let e =
            select_endpoint("n1", "n1", &NodeAddress::default(), &NodeAccess::default()).unwrap();
        assert_eq!(e, Endpoint::Local);
    }

    #[test]
    fn remote_node_uses_tls_from_the_cert_dir_on_2376() {
        let (dir, access) = certs();
        let e = select_endpoint("n2", "n1", &at("10.0.0.7"), &access).unwrap();
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
            select_endpoint("n2", "n1", &at("fd00::7"), &access).unwrap()
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
        let err = select_endpoint("n2", "n1", &at("10.0.0.7"), &access).unwrap_err();
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
        let e = select_endpoint("n2", "n1", &at("10.0.0.7"), &access).unwrap();
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
        assert!(select_endpoint("n2", "n1", &at("0.0.0.0"), &access).is_err());
        assert!(select_endpoint("n2", "n1", &NodeAddress::default(), &access).is_err());
    }

    #[test]
    fn loopback_and_unspecified_addresses_name_the_node_and_the_label() {
        let (_dir, access) = certs();
        for addr in ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost"] {
            let node = NodeAddress {
                hostname: Some("worker-2".into()),
                addr: Some(addr.into()),
                daemon_label: None,
            };
            let msg = select_endpoint("n2", "n1", &node, &access)
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with("node worker-2 (n2): "), "{msg}");
            assert!(
                msg.contains(&format!("reports its address as {addr}")),
                "{msg}"
            );
            assert!(
                msg.contains("--label-add forge.daemon=tcp://HOST:2376 n2"),
                "{msg}"
            );
        }
        let msg = select_endpoint("n2", "n1", &NodeAddress::default(), &access)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("reports no address"), "{msg}");
        assert!(msg.contains("forge.daemon"), "{msg}");
    }

    #[test]
    fn the_daemon_label_overrides_the_reported_address() {
        let (_dir, access) = certs();
        let labelled = |addr: Option<&str>, label: &str| NodeAddress {
            hostname: Some("worker-2".into()),
            addr: addr.map(String::from),
            daemon_label: Some(label.into()),
        };
        let address = |node: &NodeAddress| match select_endpoint("n2", "n1", node, &access) {
            Ok(Endpoint::Tls { address, .. }) => address,
            other => panic!("expected TLS, got {other:?}"),
        };
        assert_eq!(
            address(&labelled(Some("127.0.0.1"), "tcp://10.1.2.3:2376")),
            "tcp://10.1.2.3:2376"
        );
        assert_eq!(
            address(&labelled(Some("10.0.0.7"), "tcp://node-b.internal:3376")),
            "tcp://node-b.internal:3376"
        );
        assert_eq!(address(&labelled(None, "10.1.2.3")), "tcp://10.1.2.3:2376");
        assert_eq!(
            address(&labelled(None, "tcp://[fd00::9]:2400")),
            "tcp://[fd00::9]:2400"
        );
        assert_eq!(
            address(&labelled(None, "[fd00::9]")),
            "tcp://[fd00::9]:2376"
        );
    }

    #[test]
    fn a_bad_daemon_label_is_an_error_naming_it() {
        let (_dir, access) = certs();
        for label in [
            "",
            "tcp://",
            "tcp://0.0.0.0:2376",
            "tcp://[::]",
            "tcp://host:notaport",
            "tcp://host:0",
            "unix:///var/run/docker.sock",
            "tcp://user@host:2376",
            "fd00::9",
        ] {
            let node = NodeAddress {
                hostname: Some("worker-2".into()),
                addr: Some("10.0.0.7".into()),
                daemon_label: Some(label.into()),
            };
            let msg = select_endpoint("n2", "n1", &node, &access)
                .unwrap_err()
                .to_string();
            assert!(
                msg.starts_with("node worker-2 (n2): its label forge.daemon="),
                "{label}: {msg}"
            );
            assert!(msg.contains("tcp://HOST:PORT"), "{msg}");
        }
    }

    #[test]
    fn node_address_reads_the_label_and_skips_unusable_status_addresses() {
        let node: bollard::models::Node = serde_json::from_value(serde_json::json!({
            "ID": "n2",
            "Description": {"Hostname": "worker-2"},
            "Spec": {"Labels": {"forge.daemon": "tcp://10.1.2.3:2376"}},
            "Status": {"State": "ready", "Addr": "127.0.0.1"},
            "ManagerStatus": {"Addr": "10.0.0.7:2377"}
        }))
        .unwrap();
        assert_eq!(
            NodeAddress::of(&node),
            NodeAddress {
                hostname: Some("worker-2".into()),
                addr: Some("10.0.0.7".into()),
                daemon_label: Some("tcp://10.1.2.3:2376".into()),
            }
        );
        let worker: bollard::models::Node = serde_json::from_value(serde_json::json!({
            "ID": "n3",
            "Status": {"State": "ready", "Addr": "0.0.0.0"}
        }))
        .unwrap();
        assert_eq!(NodeAddress::of(&worker).addr.as_deref(), Some("0.0.0.0"));
    }
}
