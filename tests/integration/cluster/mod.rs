//! A real multi-node swarm for the launcher's cluster tests (issue 14),
//! built on this machine from real parts and shared by every test of this
//! module in one test process:
//!
//! - a node image, a debootstrap'd Debian 12 tree with `docker.io`,
//!   `iptables` and Debian's distribution registry (`node-image.sh`),
//!   imported as `forge-test-node:<hash of the recipe>` and reused while
//!   the recipe is unchanged (built under a lock file when absent, never
//!   skipped);
//! - three nodes, each a dockerd in a container of that image on a bridge
//!   network made for the run: one manager (`swarm init --advertise-addr`
//!   its bridge address) and two workers. Each daemon listens on its unix
//!   socket (used only by the harness, through `docker exec`) and on
//!   tcp 2376 with mutual TLS (a CA, a server certificate per node with its
//!   IP as subjectAltName, one client certificate). There is no plain TCP
//!   port: the launcher reaches the manager and the workers only over mTLS;
//! - two registries on the manager, reachable from every node as
//!   `MANAGER:5000` (anonymous) and `MANAGER:5001` (htpasswd), both plain
//!   HTTP listed in every daemon's `--insecure-registry`. Test images are
//!   imported on the manager, pushed, and removed there again, so every
//!   node (the manager too) pulls them from the registry.
//!
//! Containers and the network carry the label `forge.test.cluster=<pid>`;
//! everything is removed when the test process exits (an `atexit` hook:
//! also after failed tests), and a process that starts removes what a
//! killed earlier one left (labelled with a pid no longer alive). The
//! host's own swarm is not touched. When a part cannot be built, every
//! test of the module fails with the reason.

mod builds;
mod gc;
mod latency;
mod node_address;
mod node_loss;
mod placement;
mod registry;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{self, busybox_rootfs};

/// Label on every container and network of a cluster: the owning test
/// process's pid.
const LABEL: &str = "forge.test.cluster";
/// The recipe of the node image; its hash names the image.
const RECIPE: &str = include_str!("node-image.sh");
/// Port of the anonymous registry on the manager.
pub const REGISTRY_PORT: u16 = 5000;
/// Port of the registry that wants a login (htpasswd).
pub const AUTH_REGISTRY_PORT: u16 = 5001;
/// The auth registry's user and password.
pub const REGISTRY_USER: &str = "forge-ci";
pub const REGISTRY_PASSWORD: &str = "pull-secret-7c1f";
/// The node label worker-1 carries (`--constraint node.labels.forge.pool==ci`).
pub const POOL_LABEL: &str = "forge.pool=ci";
/// The TLS port of every node's daemon.
pub const DAEMON_PORT: u16 = 2376;

/// One node: a dockerd in a container.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node container's name on the host.
    pub container: String,
    /// Its hostname, which the swarm reports as the node's.
    pub hostname: String,
    /// Its address on the cluster network.
    pub ip: Ipv4Addr,
    /// Its swarm node id.
    pub id: String,
}

impl Node {
    /// `docker ARGS` against this node's daemon (through its unix socket,
    /// inside the node container); panics with the output on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", self.container.as_str(), "docker"];
        all.extend_from_slice(args);
        common::docker(&all)
    }

    /// `tcp://IP:2376`.
    pub fn daemon_url(&self) -> String {
        format!("tcp://{}:{DAEMON_PORT}", self.ip)
    }

    /// The node daemon's log (it runs with `--debug`: every API call).
    pub fn daemon_log(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.container])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Durations of the bring-up, for the report.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Building the node image; `None`: an image of the same recipe was
    /// there already.
    pub image_build: Option<Duration>,
    /// Network, certificates, daemons, swarm and registries.
    pub bring_up: Duration,
}

/// The cluster of this test process.
#[derive(Debug)]
pub struct Cluster {
    /// The host's address on the cluster network: where the nodes reach
    /// servers the tests run (the forge stand-in).
    pub gateway: IpAddr,
    /// The manager first, then the workers.
    pub nodes: Vec<Node>,
    /// The launcher's `DOCKER_CERT_PATH` (ca.pem, cert.pem, key.pem).
    pub client_certs: PathBuf,
    /// A busybox image in the anonymous registry (`MANAGER:5000/...`).
    pub busybox: String,
    pub timings: Timings,
}

/// Taken by every cluster test: shared by tests that leave the cluster
/// as they found it, exclusive for one that changes it for a while (a node
/// label, a node stopped).
static USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A test's hold on the cluster (see [`shared`] and [`exclusive`]).
pub enum Hold {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

/// The cluster, for a test that leaves it as it is; other such tests run
/// beside it.
pub fn shared() -> (&'static Cluster, Hold) {
    let hold = Hold::Shared(USE.read().unwrap_or_else(|p| p.into_inner()));
    (cluster(), hold)
}

/// The cluster for a test alone: one that changes it (node labels, nodes)
/// and puts it back before it lets go.
pub fn exclusive() -> (&'static Cluster, Hold) {
    let hold = Hold::Exclusive(USE.write().unwrap_or_else(|p| p.into_inner()));
    (cluster(), hold)
}

/// The cluster, brought up on first use; panics (failing the test) with
/// the reason when it cannot be. Tests take it through [`shared`] or
/// [`exclusive`].
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let result = CLUSTER.get_or_init(|| {
        let started = Instant::now();
        let result = std::panic::catch_unwind(bring_up).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "bring-up panicked".into())
        });
        if let Ok(cluster) = &result {
            eprintln!(
                "cluster: node image {}, bring-up {:.1} s (total {:.1} s)",
                match cluster.timings.image_build {
                    Some(d) => format!("built in {:.1} s", d.as_secs_f64()),
                    None => "reused".into(),
                },
                cluster.timings.bring_up.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
        result
    });
    match result {
        Ok(cluster) => cluster,
        Err(reason) => panic!("the test cluster could not be brought up: {reason}"),
    }
}

/// What the `atexit` hook removes; filled as parts are created, so a
/// failed bring-up is cleaned up too.
static OWNED: std::sync::Mutex<Vec<Owned>> = std::sync::Mutex::new(Vec::new());

enum Owned {
    Container(String),
    Network(String),
    Dir(PathBuf),
}

fn own(thing: Owned) {
    let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    if owned.is_empty() {
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(teardown) };
    }
    owned.push(thing);
}

extern "C" fn teardown() {
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(|p| p.into_inner()));
    // Containers before the network they are attached to.
    for thing in owned.iter().rev() {
        match thing {
            Owned::Container(name) => quiet(&["rm", "-f", "-v", name]),
            Owned::Network(name) => quiet(&["network", "rm", name]),
            Owned::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// `docker ARGS`, output and failure ignored (cleanup).
fn quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Removes the containers, networks and certificate directories of
/// clusters whose test process is gone (killed before its `atexit` hook
/// ran).
fn remove_leftovers() {
    let dead = |pid: &str| {
        pid.trim().parse::<i32>().map_or(true, |pid| {
            pid != std::process::id() as i32
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
        })
    };
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
    let filter = format!("label={LABEL}");
    for line in common::docker(&["ps", "-a", "--filter", &filter, "--format", &format]).lines() {
        if let Some((id, pid)) = line.split_once(' ') {
            if dead(pid) {
                quiet(&["rm", "-f", "-v", id]);
            }
        }
    }
    for line in common::docker(&["network", "ls", "--filter", &filter, "--format", &format]).lines()
    {
        if let Some((id, pid)) = line.split_once(' ') {
            if dead(pid) {
                quiet(&["network", "rm", id]);
            }
        }
    }
    // The certificates of a dead run: `forge-cluster-PID-…` in the
    // temporary directory.
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("forge-cluster-")
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(dead) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The node image's tag: a hash of its recipe.
pub fn node_image_tag() -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, RECIPE.as_bytes());
    format!("forge-test-node:{}", &hex::encode(digest.as_ref())[..16])
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The node image, built when absent; returns its tag and how long the
/// build took (`None`: reused). Test processes building it at once take
/// turns on a lock file; the later ones find it built.
pub fn node_image() -> (String, Option<Duration>) {
    let tag = node_image_tag();
    if image_exists(&tag) {
        return (tag, None);
    }
    let lock_path = std::env::temp_dir().join("forge-test-node-image.lock");
    let file =
        File::create(&lock_path).unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    // Held until the image is imported (released on return).
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e}", lock_path.display()));
    if image_exists(&tag) {
        return (tag, None);
    }
    common::require_program(
        "debootstrap",
        "apt-get install debootstrap (.ci/run installs it): the cluster's node image is made with it",
    );
    let started = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("node-image.sh");
    std::fs::write(&script, RECIPE).expect("write the recipe");
    let tree = work.path().join("tree");
    let tarball = work.path().join("node.tar");
    let out = Command::new("sh")
        .arg(&script)
        .arg(&tree)
        .arg(&tarball)
        .stdin(Stdio::null())
        .output()
        .expect("run node-image.sh");
    assert!(
        out.status.success(),
        "building the node image with debootstrap failed ({}); is deb.debian.org reachable (or FORGE_CLUSTER_MIRROR set)?\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 30),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    common::docker(&[
        "import",
        "--change",
        "CMD [\"dockerd\"]",
        &tarball.display().to_string(),
        &tag,
    ]);
    (tag, Some(started.elapsed()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The node container's command: waits for its certificates and flags
/// (written once its address is known), then runs dockerd with them.
const NODE_COMMAND: &str =
    "until [ -e /certs/ready ]; do sleep 0.1; done; exec dockerd $(cat /certs/flags)";

fn bring_up() -> Cluster {
    common::docker_ready();
    common::require_program("openssl", "apt-get install openssl");
    remove_leftovers();
    let (image, image_build) = node_image();
    let started = Instant::now();
    let pid = std::process::id().to_string();
    let label = format!("{LABEL}={pid}");
    let prefix = common::unique_name("forge-cluster");

    let network = prefix.clone();
    common::docker(&["network", "create", "--label", &label, &network]);
    own(Owned::Network(network.clone()));
    let gateway: IpAddr = common::docker(&[
        "network",
        "inspect",
        &network,
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])
    .parse()
    .expect("the network's gateway is an IP address");

    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).expect("create the cluster's directory");
    own(Owned::Dir(dir.clone()));
    common::pki::make_ca(&dir, "cluster");
    common::pki::make_cert(&dir, "cluster", "client", "extendedKeyUsage=clientAuth\n");
    let client_certs = dir.join("client");
    std::fs::create_dir_all(&client_certs).expect("create client cert dir");
    for (from, to) in [
        ("cluster-ca.pem", "ca.pem"),
        ("client.pem", "cert.pem"),
        ("client.key", "key.pem"),
    ] {
        std::fs::copy(dir.join(from), client_certs.join(to)).expect("copy client certs");
    }

    // The nodes, started at once; each waits for its certificate.
    let names = ["manager", "worker-1", "worker-2"];
    let mut nodes = Vec::new();
    for name in names {
        let container = format!("{prefix}-{name}");
        let certs = dir.join(name);
        std::fs::create_dir_all(&certs).expect("create node cert dir");
        let mount = format!("{}:/certs:ro", certs.display());
        common::docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--hostname",
            name,
            "--network",
            &network,
            "--label",
            &label,
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--device-cgroup-rule",
            "a *:* rwm",
            "--cgroupns",
            "host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            // An anonymous volume: removed with the container (`rm -v`).
            "-v",
            "/var/lib/docker",
            "-v",
            &mount,
            &image,
            "sh",
            "-c",
            NODE_COMMAND,
        ]);
        own(Owned::Container(container.clone()));
        let ip: Ipv4Addr = common::docker(&[
            "inspect",
            &container,
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ])
        .parse()
        .expect("the node's address is an IPv4 address");
        nodes.push(Node {
            container,
            hostname: name.to_string(),
            ip,
            id: String::new(),
        });
    }
    let manager_ip = nodes[0].ip;
    for node in &nodes {
        let certs = dir.join(&node.hostname);
        common::pki::make_cert(
            &dir,
            "cluster",
            &format!("{}-server", node.hostname),
            &format!(
                // The gateway too: a test may reach a node through a
                // forwarder on the host (a `forge.daemon` label).
                "subjectAltName=IP:{},IP:{gateway},DNS:{}\nextendedKeyUsage=serverAuth\n",
                node.ip, node.hostname
            ),
        );
        std::fs::copy(dir.join("cluster-ca.pem"), certs.join("ca.pem")).expect("copy CA");
        std::fs::copy(
            dir.join(format!("{}-server.pem", node.hostname)),
            certs.join("server.pem"),
        )
        .expect("copy server cert");
        std::fs::copy(
            dir.join(format!("{}-server.key", node.hostname)),
            certs.join("server.key"),
        )
        .expect("copy server key");
        let flags = [
            "--debug".to_string(),
            "--host=unix:///var/run/docker.sock".into(),
            format!("--host=tcp://0.0.0.0:{DAEMON_PORT}"),
            "--tlsverify".into(),
            "--tlscacert=/certs/ca.pem".into(),
            "--tlscert=/certs/server.pem".into(),
            "--tlskey=/certs/server.key".into(),
            format!("--insecure-registry={manager_ip}:{REGISTRY_PORT}"),
            format!("--insecure-registry={manager_ip}:{AUTH_REGISTRY_PORT}"),
            // Its containers' cgroups apart from the host daemon's.
            format!("--cgroup-parent=/{}", node.container),
        ];
        std::fs::write(certs.join("flags"), flags.join(" ")).expect("write dockerd flags");
        std::fs::write(certs.join("ready"), "").expect("write ready");
    }
    for node in &nodes {
        wait_for(
            &format!("the daemon of node {}", node.hostname),
            Duration::from_secs(60),
            || {
                Command::new("docker")
                    .args(["exec", &node.container, "docker", "info"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
            || tail(&node.daemon_log(), 20),
        );
    }

    // The swarm.
    let manager_addr = manager_ip.to_string();
    nodes[0].docker(&["swarm", "init", "--advertise-addr", &manager_addr]);
    let token = nodes[0].docker(&["swarm", "join-token", "-q", "worker"]);
    for node in &nodes[1..] {
        node.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{manager_addr}:2377"),
        ]);
    }
    for node in &mut nodes {
        node.id = node.docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
    }
    let manager = nodes[0].clone();
    wait_for(
        "every node Ready in the swarm",
        Duration::from_secs(60),
        || {
            manager
                .docker(&["node", "ls", "--format", "{{.Status}}"])
                .lines()
                .filter(|s| *s == "Ready")
                .count()
                == names.len()
        },
        || manager.docker(&["node", "ls"]),
    );

    // The pool of the placement tests.
    manager.docker(&["node", "update", "--label-add", POOL_LABEL, &nodes[1].id]);
    start_registries(&manager);
    let cluster = Cluster {
        gateway,
        nodes,
        client_certs,
        busybox: String::new(),
        timings: Timings {
            image_build,
            bring_up: Duration::ZERO,
        },
    };
    let root = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(root.path());
    let busybox = cluster.push_image(root.path(), "forge-busybox:1", false);
    Cluster {
        busybox,
        timings: Timings {
            image_build,
            bring_up: started.elapsed(),
        },
        ..cluster
    }
}

/// The anonymous registry and the htpasswd one, in the manager.
fn start_registries(manager: &Node) {
    let config = |port: u16, auth: &str| {
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry/{port}\n  delete:\n    enabled: true\nhttp:\n  addr: :{port}\n{auth}"
        )
    };
    let anonymous = config(REGISTRY_PORT, "");
    let with_auth = config(
        AUTH_REGISTRY_PORT,
        "auth:\n  htpasswd:\n    realm: forge-test\n    path: /etc/docker/registry/htpasswd\n",
    );
    let script = format!(
        "set -e\n\
         printf '%s' '{anonymous}' >/etc/docker/registry/anonymous.yml\n\
         printf '%s' '{with_auth}' >/etc/docker/registry/auth.yml\n\
         htpasswd -Bbc /etc/docker/registry/htpasswd {REGISTRY_USER} {REGISTRY_PASSWORD}\n\
         mkdir -p /var/lib/docker-registry\n\
         nohup docker-registry serve /etc/docker/registry/anonymous.yml >/var/log/registry-{REGISTRY_PORT}.log 2>&1 &\n\
         nohup docker-registry serve /etc/docker/registry/auth.yml >/var/log/registry-{AUTH_REGISTRY_PORT}.log 2>&1 &\n"
    );
    common::docker(&["exec", &manager.container, "sh", "-c", &script]);
    for port in [REGISTRY_PORT, AUTH_REGISTRY_PORT] {
        let addr = SocketAddr::from((manager.ip, port));
        wait_for(
            &format!("the registry on {addr}"),
            Duration::from_secs(30),
            || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok(),
            || {
                common::docker(&[
                    "exec",
                    &manager.container,
                    "cat",
                    &format!("/var/log/registry-{port}.log"),
                ])
            },
        );
    }
}

/// Polls `ready` every 200 ms; panics naming `what` (with `diagnose()`)
/// when it is not true within `limit`.
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
    diagnose: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}\n{}", diagnose());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Cluster {
    pub fn manager(&self) -> &Node {
        &self.nodes[0]
    }

    /// `MANAGER:5000`, the anonymous registry.
    pub fn registry(&self) -> String {
        format!("{}:{REGISTRY_PORT}", self.manager().ip)
    }

    /// `MANAGER:5001`, the registry that wants a login.
    pub fn auth_registry(&self) -> String {
        format!("{}:{AUTH_REGISTRY_PORT}", self.manager().ip)
    }

    /// Imports `rootfs` on the manager as `NAME:TAG` in a registry (the
    /// htpasswd one with `auth`), pushes it and removes the manager's
    /// copy: every node pulls it. Returns the image reference.
    pub fn push_image(&self, rootfs: &Path, name: &str, auth: bool) -> String {
        let manager = self.manager();
        let registry = if auth {
            self.auth_registry()
        } else {
            self.registry()
        };
        let reference = format!("{registry}/{name}");
        let mut tar = Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(rootfs)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let import = Command::new("docker")
            .args(["exec", "-i", &manager.container, "docker", "import", "-"])
            .arg(&reference)
            .stdin(Stdio::from(tar.stdout.take().expect("tar stdout")))
            .output()
            .expect("docker exec docker import");
        assert!(
            tar.wait().expect("tar").success(),
            "tar of {}",
            rootfs.display()
        );
        assert!(
            import.status.success(),
            "importing {reference} on the manager: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        if auth {
            manager.docker(&[
                "login",
                "--username",
                REGISTRY_USER,
                "--password",
                REGISTRY_PASSWORD,
                &registry,
            ]);
        }
        manager.docker(&["push", &reference]);
        if auth {
            manager.docker(&["logout", &registry]);
        }
        manager.docker(&["rmi", &reference]);
        reference
    }

    /// `forge-launch ARGS` reaching the manager over mutual TLS only
    /// (`DOCKER_HOST=tcp://MANAGER:2376`, `DOCKER_TLS_VERIFY`,
    /// `DOCKER_CERT_PATH`: also the workers' client certificate), with
    /// `FORGE_INSECURE_HTTP=1` for the forge stand-in.
    pub fn launcher(&self) -> Command {
        let mut cmd = Command::new(crate::launch_swarm::launcher());
        cmd.env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_CONFIG")
            .env("DOCKER_HOST", self.manager().daemon_url())
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &self.client_certs)
            // The forge stand-in is plain HTTP on the cluster network.
            .env("FORGE_INSECURE_HTTP", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// The swarm id and node of the task of service `name`.
    pub fn task_node(&self, name: &str) -> &Node {
        let id =
            self.manager()
                .docker(&["service", "ps", name, "--no-trunc", "--format", "{{.Node}}"]);
        let hostname = id.lines().next().unwrap_or_default().trim().to_string();
        self.nodes
            .iter()
            .find(|n| n.hostname == hostname)
            .unwrap_or_else(|| panic!("service {name} runs on unknown node {hostname:?}"))
    }
}

/// A repository on a forge stand-in the nodes reach (on the cluster
/// network's gateway), its `.forge.yml` naming an image of the cluster's
/// registry, and a token.
pub struct Project {
    /// Holds the token file and the repository.
    pub _dir: tempfile::TempDir,
    pub forge: crate::common::ForgeServer,
    pub repo: String,
    pub token_file: PathBuf,
}

impl Project {
    /// `body`: the `.forge.yml` without its `image:` line.
    pub fn new(cluster: &Cluster, image: &str, body: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = common::unique_name("widget");
        let token = format!("tok-{}", common::unique_name("secret"));
        let forge = crate::common::ForgeServer::start_on(&token, cluster.gateway);
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("write token file");
        let git = common::GitRepo::init(&dir.path().join("repo"));
        let spec = format!("image: {image}\n{body}");
        git.write("README", "a repository\n");
        git.write(".forge.yml", &spec);
        git.commit("initial");
        forge.set_file(".forge.yml", spec.as_bytes().to_vec());
        let prefix = format!("--prefix=acme-{repo}-{}/", &git.head()[..7]);
        let zip = Command::new("git")
            .args(["archive", "--format=zip", &prefix, "HEAD"])
            .current_dir(git.dir())
            .output()
            .expect("git archive");
        assert!(zip.status.success(), "git archive failed");
        forge.set_zipball(zip.stdout);
        Project {
            _dir: dir,
            forge,
            repo,
            token_file,
        }
    }

    /// A head commit id of its own for build `n` (the forge stand-in
    /// serves the same tree for every sha; statuses are kept per sha).
    pub fn sha(n: u64) -> String {
        format!("{:040x}", 0x00c0_ffee_0000_u64 + n)
    }

    pub fn status_url(&self, sha: &str) -> String {
        format!(
            "{}/repos/acme/{}/statuses/{sha}",
            self.forge.url(),
            self.repo
        )
    }

    /// `forge-launch swarm` of pull request `pr` at `sha` on the cluster
    /// (builds on each node's host network, where the forge is reachable;
    /// `--start-timeout 120s` unless `extra` has one).
    pub fn swarm(&self, cluster: &Cluster, pr: u64, sha: &str, extra: &[&str]) -> Command {
        let mut cmd = cluster.launcher();
        cmd.args(["swarm", "--repo", &format!("acme/{}", self.repo)])
            .args(["--pr", &pr.to_string(), "--sha", sha])
            .args(["--status-url", &self.status_url(sha)])
            .args(["--api-url", &self.forge.url()])
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--forgexec")
            .arg(common::static_forgexec())
            .args(["--network", "host"])
            .args(extra);
        if !extra.contains(&"--start-timeout") {
            cmd.args(["--start-timeout", "120s"]);
        }
        cmd
    }

    /// The statuses of `sha` once one is final (not `pending`).
    pub fn final_statuses(&self, sha: &str, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let statuses = self.forge.statuses(sha);
            if statuses.iter().any(|s| s["state"] != "pending") {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "no final status for {sha} within {limit:?}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Swarm services of the cluster removed on Drop.
pub struct Services<'a> {
    pub cluster: &'a Cluster,
    pub names: Vec<String>,
}

impl Drop for Services<'_> {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut args = vec!["exec", self.cluster.manager().container.as_str()];
        args.extend(["docker", "service", "rm"]);
        args.extend(self.names.iter().map(String::as_str));
        quiet(&args);
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
