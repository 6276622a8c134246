//! A node lost mid-build, and a build on a worker cancelled by a newer
//! push (issue 14). A test that kills a node brings up a node of its own
//! (a fourth dockerd container, joined as a worker with a label only its
//! builds ask for) and kills that one, so the cluster's own three nodes
//! never go down; it holds the cluster exclusively meanwhile (no other
//! test's build lands on the doomed node), and removes the node from the
//! swarm and deletes it afterwards. Its build is placed there by the label constraint;
//! once it runs, a shared worker gets the same label, so a retry (kept off
//! the lost node by `node.id!=…`) has somewhere to go.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{exclusive, shared, text, wait_for, Cluster, Node, Project, Services, DAEMON_PORT};
use crate::common;

/// The label a test's builds are constrained to: `PREFIX.TAG=1`, a key of
/// its own (a shared node may carry several tests' labels at once).
const LABEL_PREFIX: &str = "forge.test.nodeloss";

/// The final status must come within this of the node's loss (issue 14).
const LOSS_TO_FINAL: Duration = Duration::from_secs(60);

/// A build that runs long enough to lose its node, and a sidecar beside it
/// (which must not be left anywhere).
fn spec(image: &str) -> String {
    format!(
        "\
services:
  idle:
    image: {image}
    command: [sleep, \"600\"]
execute:
  - echo started
  - sleep 20
"
    )
}

/// A node of the test's own, joined to the cluster's swarm as a worker
/// with the label `forge.test.nodeloss.TAG=1`; deleted (and removed from the
/// swarm) on drop.
struct OwnNode<'a> {
    cluster: &'a Cluster,
    node: Node,
    tag: String,
    /// Shared nodes given the tag, unlabelled on drop.
    labelled: Mutex<Vec<String>>,
}

impl<'a> OwnNode<'a> {
    fn join(cluster: &'a Cluster) -> OwnNode<'a> {
        let manager = cluster.manager();
        let name = common::unique_name("lost");
        let hostname = name.clone();
        let container = format!("{}-{name}", manager.container);
        let network = common::docker(&[
            "inspect",
            &manager.container,
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        ]);
        let dir = cluster
            .client_certs
            .parent()
            .expect("the client certificates are in the cluster's directory")
            .to_path_buf();
        let certs = dir.join(&name);
        std::fs::create_dir_all(&certs).expect("create the node's cert dir");
        let label = format!("{}={}", super::LABEL, std::process::id());
        let mount = format!("{}:/certs:ro", certs.display());
        common::docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--hostname",
            &hostname,
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
            "-v",
            "/var/lib/docker",
            "-v",
            &mount,
            &super::node_image_tag(),
            "sh",
            "-c",
            super::NODE_COMMAND,
        ]);
        super::own(super::Owned::Container(container.clone()));
        let ip: std::net::Ipv4Addr = common::docker(&[
            "inspect",
            &container,
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ])
        .parse()
        .expect("the node's address is an IPv4 address");
        common::pki::make_cert(
            &dir,
            "cluster",
            &format!("{name}-server"),
            &format!("subjectAltName=IP:{ip},DNS:{hostname}\nextendedKeyUsage=serverAuth\n"),
        );
        for (from, to) in [
            ("cluster-ca.pem".to_string(), "ca.pem"),
            (format!("{name}-server.pem"), "server.pem"),
            (format!("{name}-server.key"), "server.key"),
        ] {
            std::fs::copy(dir.join(&from), certs.join(to))
                .unwrap_or_else(|e| panic!("copy {from}: {e}"));
        }
        let manager_ip = manager.ip;
        let flags = [
            "--debug".to_string(),
            "--host=unix:///var/run/docker.sock".into(),
            format!("--host=tcp://0.0.0.0:{DAEMON_PORT}"),
            "--tlsverify".into(),
            "--tlscacert=/certs/ca.pem".into(),
            "--tlscert=/certs/server.pem".into(),
            "--tlskey=/certs/server.key".into(),
            format!("--insecure-registry={manager_ip}:{}", super::REGISTRY_PORT),
            format!(
                "--insecure-registry={manager_ip}:{}",
                super::AUTH_REGISTRY_PORT
            ),
            format!("--cgroup-parent=/{container}"),
        ];
        std::fs::write(certs.join("flags"), flags.join(" ")).expect("write dockerd flags");
        std::fs::write(certs.join("ready"), "").expect("write ready");
        let mut node = Node {
            container,
            hostname,
            ip,
            id: String::new(),
        };
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
            || node.daemon_log(),
        );
        let token = manager.docker(&["swarm", "join-token", "-q", "worker"]);
        node.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{manager_ip}:2377"),
        ]);
        node.id = node.docker(&["info", "--format", "{{.Swarm.NodeID}}"]);
        let tag = common::unique_name("t");
        manager.docker(&[
            "node",
            "update",
            "--label-add",
            &format!("{LABEL_PREFIX}.{tag}=1"),
            &node.id,
        ]);
        let id = node.id.clone();
        wait_for(
            &format!("node {} Ready", node.hostname),
            Duration::from_secs(60),
            || {
                manager.docker(&["node", "inspect", &id, "--format", "{{.Status.State}}"])
                    == "ready"
            },
            || manager.docker(&["node", "ls"]),
        );
        OwnNode {
            cluster,
            node,
            tag,
            labelled: Mutex::new(Vec::new()),
        }
    }

    /// The placement constraint of this node's builds.
    fn constraint(&self) -> String {
        format!("node.labels.{LABEL_PREFIX}.{}==1", self.tag)
    }

    /// Gives `other` this node's label: where a retry may go.
    fn share_label_with(&self, other: &Node) {
        self.cluster.manager().docker(&[
            "node",
            "update",
            "--label-add",
            &format!("{LABEL_PREFIX}.{}=1", self.tag),
            &other.id,
        ]);
        self.labelled.lock().unwrap().push(other.id.clone());
    }

    /// Kills the node's container (its dockerd and every container on it);
    /// returns when.
    fn kill(&self) -> Instant {
        let killed = Instant::now();
        common::docker(&["kill", &self.node.container]);
        killed
    }

    /// Waits until a container of `repo`'s builds runs on this node.
    fn wait_running(&self, repo: &str, limit: Duration) {
        let filter = format!("label=forge.repo=acme/{repo}");
        wait_for(
            &format!("a build of {repo} running on {}", self.node.hostname),
            limit,
            || {
                !self
                    .node
                    .docker(&[
                        "ps",
                        "-q",
                        "--filter",
                        &filter,
                        "--filter",
                        "status=running",
                    ])
                    .is_empty()
            },
            || self.node.docker(&["ps", "-a"]),
        );
    }
}

impl Drop for OwnNode<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the log of node {} (killed by the test)\n{}",
                self.node.hostname,
                super::tail(&self.node.daemon_log(), 60)
            );
        }
        let manager = self.cluster.manager();
        for id in self.labelled.lock().unwrap().iter() {
            super::quiet(&[
                "exec",
                &manager.container,
                "docker",
                "node",
                "update",
                "--label-rm",
                &format!("{LABEL_PREFIX}.{}", self.tag),
                id,
            ]);
        }
        super::quiet(&["rm", "-f", "-v", &self.node.container]);
        super::quiet(&[
            "exec",
            &manager.container,
            "docker",
            "node",
            "rm",
            "--force",
            &self.node.id,
        ]);
    }
}

/// A shared worker for the retry.
fn survivor(cluster: &Cluster) -> &Node {
    cluster
        .nodes
        .iter()
        .find(|n| n.hostname == "worker-1")
        .expect("the cluster has worker-1")
}

/// Waits for a status whose description contains `part`; returns all
/// statuses then and when it came.
fn wait_status(
    project: &Project,
    sha: &str,
    part: &str,
    limit: Duration,
    diagnose: &dyn Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let statuses = project.forge.statuses(sha);
        if statuses
            .iter()
            .any(|s| s["description"].as_str().is_some_and(|d| d.contains(part)))
        {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "no status saying {part:?} for {sha} within {limit:?}: {:#?}\n{}",
            describe(&statuses),
            diagnose()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a child with a bound (killing it when over).
fn wait_child(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("forge-launch did not end within {limit:?}:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().expect("wait")
}

/// Nothing of `repo`'s builds is left: no service, no container (build or
/// sidecar) on any node that is up.
fn nothing_left(cluster: &Cluster, repo: &str) {
    let filter = format!("label=forge.repo=acme/{repo}");
    let manager = cluster.manager();
    wait_for(
        &format!("no service or container of acme/{repo} left"),
        Duration::from_secs(60),
        || {
            manager
                .docker(&["service", "ls", "-q", "--filter", &filter])
                .is_empty()
                && cluster
                    .nodes
                    .iter()
                    .all(|n| n.docker(&["ps", "-aq", "--filter", &filter]).is_empty())
        },
        || {
            let mut out = manager.docker(&["service", "ls", "--filter", &filter]);
            for n in &cluster.nodes {
                out.push_str(&format!(
                    "\n{}:\n{}",
                    n.hostname,
                    n.docker(&["ps", "-a", "--filter", &filter])
                ));
            }
            out
        },
    );
}

fn describe(statuses: &[Value]) -> Vec<String> {
    statuses
        .iter()
        .map(|s| format!("{}: {}", s["state"], s["description"]))
        .collect()
}

#[test]
fn swarm_wait_a_build_whose_node_goes_down_runs_again_on_another_node() {
    // A node joins and goes: no other test's build may land on it.
    let (cluster, _hold) = exclusive();
    let own = OwnNode::join(cluster);
    let project = Project::new(cluster, &cluster.busybox, &spec(&cluster.busybox));
    let sha = Project::sha(41);
    let child = project
        .swarm(
            cluster,
            41,
            &sha,
            &["--wait", "--constraint", &own.constraint()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forge-launch swarm --wait");
    own.wait_running(&project.repo, Duration::from_secs(120));
    own.share_label_with(survivor(cluster));
    let killed = own.kill();

    let retry = format!("retry 1 of 1 after node {} went down", own.node.hostname);
    wait_status(&project, &sha, &retry, LOSS_TO_FINAL, &String::new);
    let to_retry = killed.elapsed();
    let out = wait_child(child, Duration::from_secs(180));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.final_statuses(&sha, Duration::from_secs(10));
    let all = describe(&statuses);
    let last = statuses.last().expect("statuses");
    assert_eq!(last["state"], "success", "{all:#?}");
    let retry_at = statuses
        .iter()
        .position(|s| s["description"] == retry.as_str())
        .expect("the retry's pending status");
    assert_eq!(statuses[retry_at]["state"], "pending", "{all:#?}");
    assert!(
        statuses.iter().all(|s| !s["description"]
            .as_str()
            .unwrap_or("")
            .contains("went down during the build")),
        "the lost attempt posted a final status: {all:#?}"
    );
    nothing_left(cluster, &project.repo);
    eprintln!(
        "node loss: {} killed; retry's pending status {:.1} s later",
        own.node.hostname,
        to_retry.as_secs_f64()
    );
}

#[test]
fn swarm_wait_without_retries_ends_with_the_node_went_down_within_a_minute() {
    // A node joins and goes: no other test's build may land on it.
    let (cluster, _hold) = exclusive();
    let own = OwnNode::join(cluster);
    let project = Project::new(cluster, &cluster.busybox, &spec(&cluster.busybox));
    let sha = Project::sha(42);
    let child = project
        .swarm(
            cluster,
            42,
            &sha,
            &[
                "--wait",
                "--retry-lost",
                "0",
                "--constraint",
                &own.constraint(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start forge-launch swarm --wait");
    own.wait_running(&project.repo, Duration::from_secs(120));
    let killed = own.kill();
    let statuses = project.final_statuses(&sha, LOSS_TO_FINAL);
    let to_final = killed.elapsed();
    let went_down = format!("node {} went down during the build", own.node.hostname);
    let last = statuses.last().expect("statuses");
    assert_eq!(last["state"], "error", "{:#?}", describe(&statuses));
    assert!(
        last["description"]
            .as_str()
            .is_some_and(|d| d.ends_with(&went_down)),
        "{:#?}",
        describe(&statuses)
    );
    let out = wait_child(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&went_down),
        "{}",
        text(&out)
    );
    nothing_left(cluster, &project.repo);
    eprintln!(
        "node loss: {} killed; final status (swarm --wait) {:.1} s later",
        own.node.hostname,
        to_final.as_secs_f64()
    );
}

const SECRET: &str = "node-loss-webhook-secret";

/// `forge-launch serve` on the cluster (over mTLS to the manager), killed
/// on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(cluster: &Cluster, project: &Project, extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("write secret");
        let mut cmd = cluster.launcher();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--webhook-secret-file")
            .arg(&secret)
            .arg("--token-file")
            .arg(&project.token_file)
            .args(["--api-url", &project.forge.url()])
            .arg("--forgexec")
            .arg(common::static_forgexec())
            .args(["--network", "host", "--start-timeout", "120s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start forge-launch serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "serve did not say where it listens:\n{}",
                    log.lock().unwrap().join("\n")
                )
            })
            .parse()
            .expect("serve logs its address");
        Serve {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// POSTs a signed `pull_request` `opened` delivery; returns the HTTP code.
    fn open_pull_request(&self, project: &Project, number: u64, sha: &str) -> u16 {
        let full = format!("acme/{}", project.repo);
        let repo = serde_json::json!({
            "name": project.repo,
            "full_name": full,
            "owner": {"login": "acme"},
        });
        let body = serde_json::json!({
            "action": "opened",
            "number": number,
            "pull_request": {
                "number": number,
                "commits": 1,
                "head": {"sha": sha, "repo": repo},
                "base": {"repo": repo},
            },
            "repository": repo,
        })
        .to_string();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let signature = hex::encode(ring::hmac::sign(&key, body.as_bytes()).as_ref());
        let head = format!(
            "POST / HTTP/1.1\r\nHost: serve\r\nConnection: close\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {}\r\nX-Hub-Signature-256: sha256={signature}\r\nContent-Length: {}\r\n\r\n",
            common::unique_name("delivery"),
            body.len()
        );
        let mut stream = TcpStream::connect(self.addr).expect("connect to serve");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.write_all(head.as_bytes()).expect("write");
        stream.write_all(body.as_bytes()).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        answer
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- serve's log\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_a_build_whose_node_goes_down_runs_again_on_another_node() {
    // A node joins and goes: no other test's build may land on it.
    let (cluster, _hold) = exclusive();
    let own = OwnNode::join(cluster);
    let project = Project::new(cluster, &cluster.busybox, &spec(&cluster.busybox));
    let serve = Serve::start(cluster, &project, &["--constraint", &own.constraint()]);
    let sha = Project::sha(43);
    assert_eq!(
        serve.open_pull_request(&project, 43, &sha),
        202,
        "{}",
        serve.log()
    );
    own.wait_running(&project.repo, Duration::from_secs(120));
    own.share_label_with(survivor(cluster));
    let killed = own.kill();
    let retry = format!("retry 1 of 1 after node {} went down", own.node.hostname);
    wait_status(&project, &sha, &retry, LOSS_TO_FINAL, &|| serve.log());
    let to_retry = killed.elapsed();
    let statuses = project.final_statuses(&sha, Duration::from_secs(120));
    let all = describe(&statuses);
    assert_eq!(
        statuses.last().expect("statuses")["state"],
        "success",
        "{all:#?}\n{}",
        serve.log()
    );
    assert!(
        all.iter()
            .all(|s| !s.contains("went down during the build")),
        "the lost attempt posted a final status: {all:#?}"
    );
    nothing_left_after_gc(cluster, &project.repo);
    eprintln!(
        "node loss: {} killed; serve's retry pending {:.1} s later",
        own.node.hostname,
        to_retry.as_secs_f64()
    );
}

#[test]
fn serve_without_retries_ends_with_the_node_went_down_within_a_minute() {
    // A node joins and goes: no other test's build may land on it.
    let (cluster, _hold) = exclusive();
    let own = OwnNode::join(cluster);
    let project = Project::new(cluster, &cluster.busybox, &spec(&cluster.busybox));
    let serve = Serve::start(
        cluster,
        &project,
        &["--retry-lost", "0", "--constraint", &own.constraint()],
    );
    let sha = Project::sha(44);
    assert_eq!(
        serve.open_pull_request(&project, 44, &sha),
        202,
        "{}",
        serve.log()
    );
    own.wait_running(&project.repo, Duration::from_secs(120));
    let killed = own.kill();
    let statuses = project.final_statuses(&sha, LOSS_TO_FINAL);
    let to_final = killed.elapsed();
    let last = statuses.last().expect("statuses");
    assert_eq!(last["state"], "error", "{:#?}", describe(&statuses));
    assert_eq!(
        last["description"],
        format!("node {} went down during the build", own.node.hostname),
        "{:#?}\n{}",
        describe(&statuses),
        serve.log()
    );
    nothing_left(cluster, &project.repo);
    eprintln!(
        "node loss: {} killed; final status (serve) {:.1} s later",
        own.node.hostname,
        to_final.as_secs_f64()
    );
}

/// serve keeps a finished build's service until its retention: the retry's
/// service finished, so only containers must be gone, and the lost one's
/// service.
fn nothing_left_after_gc(cluster: &Cluster, repo: &str) {
    let filter = format!("label=forge.repo=acme/{repo}");
    let manager = cluster.manager();
    wait_for(
        &format!("no running container and at most the retry's service of acme/{repo}"),
        Duration::from_secs(60),
        || {
            manager
                .docker(&["service", "ls", "-q", "--filter", &filter])
                .lines()
                .count()
                <= 1
                && cluster.nodes.iter().all(|n| {
                    n.docker(&[
                        "ps",
                        "-q",
                        "--filter",
                        &filter,
                        "--filter",
                        "status=running",
                    ])
                    .is_empty()
                })
        },
        || manager.docker(&["service", "ls", "--filter", &filter]),
    );
}

/// A build that runs until it is stopped, with a sidecar.
fn slow(image: &str) -> String {
    format!(
        "\
services:
  idle:
    image: {image}
    command: [sleep, \"600\"]
execute:
  - echo started
  - sleep 300
"
    )
}

#[test]
fn a_newer_push_cancels_a_build_on_a_worker_which_reports_it() {
    let (cluster, _hold) = shared();
    let worker = survivor(cluster);
    let project = Project::new(cluster, &cluster.busybox, &slow(&cluster.busybox));
    let on_worker = format!("node.hostname=={}", worker.hostname);
    let first = Project::sha(45);
    let out = project
        .swarm(cluster, 45, &first, &["--constraint", &on_worker])
        .output()
        .expect("forge-launch swarm");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut services = Services {
        cluster,
        names: vec![old.clone()],
    };
    assert_eq!(cluster.task_node(&old).hostname, worker.hostname);
    // forgexec runs (its first status), its sidecar beside it.
    wait_status(&project, &first, "", Duration::from_secs(120), &String::new);
    let sidecar = format!("label=forge.sidecar.of={old}");
    wait_for(
        "the sidecar on the worker",
        Duration::from_secs(60),
        || {
            !worker
                .docker(&["ps", "-q", "--filter", &sidecar])
                .is_empty()
        },
        || worker.docker(&["ps", "-a"]),
    );

    let second = Project::sha(46);
    let out = project
        .swarm(cluster, 45, &second, &["--constraint", &on_worker])
        .output()
        .expect("forge-launch swarm");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    services
        .names
        .push(String::from_utf8_lossy(&out.stdout).trim().to_string());

    let statuses = project.final_statuses(&first, Duration::from_secs(90));
    let last = statuses.last().expect("statuses");
    assert_eq!(last["state"], "error", "{:#?}", describe(&statuses));
    let description = last["description"].as_str().unwrap_or("");
    assert!(
        description.contains("cancelled") && description.contains("SIGTERM"),
        "forgexec on {} did not report its SIGTERM: {:#?}",
        worker.hostname,
        describe(&statuses)
    );
    wait_for(
        "the replaced build's sidecar removed from the worker",
        Duration::from_secs(30),
        || {
            worker
                .docker(&["ps", "-aq", "--filter", &sidecar])
                .is_empty()
        },
        || worker.docker(&["ps", "-a"]),
    );
    assert!(
        project
            .forge
            .statuses(&second)
            .iter()
            .all(|s| s["state"] == "pending"),
        "the newer build runs"
    );
}
