//! The launcher's connection to a remote node daemon, for real: a throwaway
//! CA, server and client certificates made with `openssl`, and `socat`
//! terminating mutual TLS on a free 127.0.0.1 port in front of the local
//! daemon's socket. Everything goes through `forgexec::launch::node`
//! (`select_endpoint` + `connect`), the code path `forge-launch swarm` takes
//! for a task placed on another node.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    busybox_rootfs, docker, import_image, static_forgexec, unique_name, Container,
};
use forgexec::launch::node::{self, Endpoint, NodeAccess, NodeAddress, TlsFiles};
use forgexec::launch::{archive, swarm, LaunchError};
use forgexec::secret::Secret;

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The node's CA with a server certificate for 127.0.0.1 and a client
/// certificate, and a second, unrelated CA with its own client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        common::pki::make_ca(d, "node");
        common::pki::make_cert(
            d,
            "node",
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        common::pki::make_cert(d, "node", "client", "extendedKeyUsage=clientAuth\n");
        common::pki::make_ca(d, "stranger");
        common::pki::make_cert(
            d,
            "stranger",
            "stranger-client",
            "extendedKeyUsage=clientAuth\n",
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The files a launcher holding the client certificate `client` uses.
    fn client_files(&self, client: &str) -> TlsFiles {
        TlsFiles {
            ca: self.path("node-ca.pem"),
            cert: self.path(&format!("{client}.pem")),
            key: self.path(&format!("{client}.key")),
        }
    }
}

/// `socat` terminating mutual TLS (client certificates of the node CA only)
/// on a free 127.0.0.1 port and forwarding to the local daemon's socket:
/// a TLS-protected remote daemon as `dockerd --tlsverify` would be. Killed
/// on Drop.
struct TlsDaemon {
    child: Child,
    port: u16,
}

impl TlsDaemon {
    fn start(pki: &Pki) -> TlsDaemon {
        common::require_program("socat", "apt-get install socat (.ci/run installs it)");
        common::docker_ready();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let listen = format!(
            "openssl-listen:{port},bind=127.0.0.1,reuseaddr,fork,max-version=TLS1.2,cert={},key={},cafile={},verify=1",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
            pki.path("node-ca.pem").display(),
        );
        // socat sets no session id context, so OpenSSL answers a client
        // resuming a session (rustls does on every new connection) with an
        // internal_error alert when client certificates are verified; a
        // real dockerd resumes fine. Turn session tickets off for socat.
        let conf = pki.path("openssl-no-tickets.cnf");
        std::fs::write(
            &conf,
            "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\nsystem_default = system_default_sect\n[system_default_sect]\nOptions = -SessionTicket\n",
        )
        .expect("write openssl config");
        let mut child = Command::new("socat")
            .env("OPENSSL_CONF", &conf)
            .arg(listen)
            .arg(format!("unix-connect:{DOCKER_SOCKET}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("socat exited ({status}) before listening on 127.0.0.1:{port}");
            }
            assert!(
                Instant::now() < deadline,
                "socat did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsDaemon { child, port }
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The access flags pointing at this daemon's port with `files`.
    fn access(&self, files: &TlsFiles) -> NodeAccess {
        NodeAccess {
            port: Some(self.port),
            tls_ca: Some(files.ca.clone()),
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(files.key.clone()),
            ..NodeAccess::default()
        }
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A node the swarm reports at 127.0.0.1 (which reaches no particular
/// machine) whose `forge.daemon` label names the test daemon's host; the
/// port comes from `--node-port`.
fn labelled_node() -> NodeAddress {
    NodeAddress {
        hostname: Some("worker".into()),
        addr: Some("127.0.0.1".into()),
        daemon_label: Some("tcp://127.0.0.1".into()),
    }
}

/// The endpoint the swarm launch picks for a task on another node (the
/// launcher itself being on node "manager").
fn remote_endpoint(daemon: &TlsDaemon, files: &TlsFiles) -> Endpoint {
    node::select_endpoint("worker", "manager", &labelled_node(), &daemon.access(files))
        .expect("a remote node with TLS files is reachable")
}

#[test]
fn the_client_certificate_opens_the_remote_daemon_for_api_calls_and_the_executor_copy() {
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&pki);
    let endpoint = remote_endpoint(&daemon, &pki.client_files("client"));
    assert_eq!(
        endpoint,
        Endpoint::Tls {
            address: daemon.address(),
            files: pki.client_files("client"),
        }
    );

    let rootfs_dir = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(rootfs_dir.path());
    let image = import_image(
        &format!("{}:1", unique_name("forge-launch-tls")),
        rootfs_dir.path(),
    );
    // The launcher's build container: created elsewhere (by the swarm),
    // without /forgexec, reached only through the node connection.
    let container = Container::create(&[
        "--entrypoint",
        "/bin/sh",
        image.tag(),
        "-c",
        "ls -ln /forgexec /forge/token && cat /forge/token && echo && /forgexec --version",
    ]);

    let rt = runtime();
    rt.block_on(async {
        let manager = node::connect_manager().await.expect("local daemon");
        let remote = node::connect(&endpoint, &manager)
            .await
            .expect("mutual TLS connection to the node daemon");

        // Plain API calls answer through the TLS endpoint...
        let version = remote.version().await.expect("version over TLS");
        let local_version = manager.version().await.expect("version over the socket");
        assert!(version.version.is_some(), "{version:?}");
        assert_eq!(version.version, local_version.version);
        let listed = remote
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .all(true)
                    .build(),
            ))
            .await
            .expect("list containers over TLS");
        assert!(
            listed
                .iter()
                .any(|c| c.id.as_deref() == Some(container.id())),
            "the container is listed over TLS"
        );

        // ...and so do the archive upload and the start, as in a swarm launch.
        let forgexec = std::fs::read(static_forgexec()).expect("read static forgexec");
        let tar = archive::executor_archive(
            &forgexec,
            Some(&Secret::new("tls-token")),
            archive::Owner::ROOT,
        )
        .expect("executor archive");
        swarm::inject_and_start(&remote, container.id(), tar)
            .await
            .expect("copy and start over TLS");
        let code = swarm::follow(&remote, container.id())
            .await
            .expect("follow over TLS");
        assert_eq!(code, 0, "logs: {:?}", container.logs());
    });
    let (stdout, stderr) = container.logs();
    // what the archive copied in over TLS: the binary runs, the token is there
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("-r--------") && l.ends_with("/forge/token")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("/forgexec")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l == "tls-token"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("forgexec ")),
        "{stdout}\n{stderr}"
    );
    let state = docker(&["inspect", "--format", "{{.State.ExitCode}}", container.id()]);
    assert_eq!(state, "0");
}

/// Connects to `daemon` through the launcher with `files`; the error.
fn connect_error(daemon: &TlsDaemon, files: &TlsFiles) -> LaunchError {
    let endpoint = remote_endpoint(daemon, files);
    runtime().block_on(async {
        let manager = node::connect_manager().await.expect("local daemon");
        match node::connect(&endpoint, &manager).await {
            Ok(_) => panic!("the daemon accepted {files:?}"),
            Err(e) => e,
        }
    })
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_with_a_tls_error() {
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&pki);
    let err = connect_error(&daemon, &pki.client_files("stranger-client"));
    assert_eq!(err.exit_code(), 3, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&daemon.address()), "names the node: {msg}");
    assert!(
        msg.contains("UnknownCA"),
        "says the daemon does not know the client certificate's CA: {msg}"
    );
}

#[test]
fn a_missing_client_key_is_refused_before_connecting() {
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&pki);
    let mut files = pki.client_files("client");
    // A certificate without its key: the launcher would present no client
    // certificate at all.
    files.key = pki.path("server.csr");
    let err = connect_error(&daemon, &files);
    let msg = err.to_string();
    assert!(msg.contains("server.csr"), "names the key file: {msg}");
}

#[test]
fn a_daemon_with_a_server_certificate_of_another_ca_is_not_trusted() {
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&pki);
    let mut files = pki.client_files("client");
    files.ca = pki.path("stranger-ca.pem");
    let err = connect_error(&daemon, &files);
    let msg = err.to_string();
    assert!(msg.contains(&daemon.address()), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
}

#[test]
fn plain_tcp_without_tls_files_is_refused_before_any_connection() {
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&pki);
    // Neither flags nor a cert directory.
    let none = NodeAccess {
        port: Some(daemon.port),
        ..NodeAccess::default()
    };
    let err = node::select_endpoint("worker", "manager", &labelled_node(), &none)
        .expect_err("no TLS files");
    let msg = err.to_string();
    assert!(msg.contains("no TLS client certificate"), "{msg}");
    assert!(msg.contains("--tls-cert"), "{msg}");
    // A cert directory without the files.
    let empty = tempfile::tempdir().expect("tempdir");
    let missing = NodeAccess {
        port: Some(daemon.port),
        cert_dir: Some(empty.path().to_path_buf()),
        ..NodeAccess::default()
    };
    let err = node::select_endpoint("worker", "manager", &labelled_node(), &missing)
        .expect_err("missing TLS files");
    let msg = err.to_string();
    assert!(msg.contains("refusing to reach"), "{msg}");
    assert!(msg.contains(&daemon.address()), "{msg}");
    assert!(msg.contains("--insecure-tcp"), "{msg}");
    // Only the explicit flag gives plain TCP.
    let insecure = NodeAccess {
        insecure_tcp: true,
        ..missing
    };
    assert_eq!(
        node::select_endpoint("worker", "manager", &labelled_node(), &insecure)
            .expect("explicitly insecure"),
        Endpoint::Plain {
            address: daemon.address()
        }
    );
}
