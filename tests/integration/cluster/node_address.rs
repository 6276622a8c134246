//! Which address the launcher uses for a node's daemon: the `forge.daemon`
//! node label over the address the swarm reports, and a clear error when
//! the label names no daemon.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{exclusive, text, Cluster, Node, Project, Services, DAEMON_PORT};

const SPEC: &str = "\
execute:
  - echo on the labelled node
";

/// A TCP forwarder on the host's address on the cluster network to a
/// node's TLS port (TLS passes through untouched), counting connections.
struct Forwarder {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(cluster: &Cluster, to: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind((cluster.gateway, 0)).expect("bind the forwarder");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&connections), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        client.set_nonblocking(false).expect("blocking");
                        let Ok(server) = TcpStream::connect(to) else {
                            continue;
                        };
                        pipe(
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        );
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Forwarder {
            addr,
            connections,
            stop,
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Sets (or with `None` removes) the `forge.daemon` label of `node`.
fn label(cluster: &Cluster, node: &Node, value: Option<&str>) {
    match value {
        Some(v) => cluster.manager().docker(&[
            "node",
            "update",
            "--label-add",
            &format!("forge.daemon={v}"),
            &node.id,
        ]),
        None => {
            cluster
                .manager()
                .docker(&["node", "update", "--label-rm", "forge.daemon", &node.id])
        }
    };
}

/// Puts the node's label back however the test ends.
struct Unlabel<'a>(&'a Cluster, &'a Node);

impl Drop for Unlabel<'_> {
    fn drop(&mut self) {
        label(self.0, self.1, None);
    }
}

#[test]
fn the_forge_daemon_label_overrides_the_reported_address_and_a_bad_one_is_an_error_naming_node_and_label(
) {
    let (cluster, _hold) = exclusive();
    let worker = &cluster.nodes[2];
    let project = Project::new(cluster, &cluster.busybox, SPEC);
    let mut services = Services {
        cluster,
        names: Vec::new(),
    };
    let on_worker = format!("node.hostname=={}", worker.hostname);

    // The swarm reports the worker at its own address; the label sends the
    // launcher through the forwarder instead.
    let reported = cluster.manager().docker(&[
        "node",
        "inspect",
        "--format",
        "{{.Status.Addr}}",
        &worker.id,
    ]);
    assert_eq!(reported, worker.ip.to_string());
    let forwarder = Forwarder::start(cluster, SocketAddr::from((worker.ip, DAEMON_PORT)));
    let _unlabel = Unlabel(cluster, worker);
    label(cluster, worker, Some(&format!("tcp://{}", forwarder.addr)));
    let sha = Project::sha(1);
    let out = project
        .swarm(cluster, 1, &sha, &["--constraint", &on_worker])
        .output()
        .expect("run forge-launch");
    services
        .names
        .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.final_statuses(&sha, Duration::from_secs(60));
    assert_eq!(statuses.last().unwrap()["state"], "success", "{statuses:?}");
    assert!(
        forwarder.connections.load(Ordering::SeqCst) > 0,
        "the launcher did not use the forge.daemon label's address"
    );

    // A label that names no daemon: an error naming the node and the label,
    // posted as the build's status.
    label(cluster, worker, Some("tcp://0.0.0.0:2376"));
    let sha = Project::sha(2);
    let out = project
        .swarm(cluster, 2, &sha, &["--constraint", &on_worker])
        .output()
        .expect("run forge-launch");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        format!("node {} (", worker.hostname),
        "forge.daemon=\"tcp://0.0.0.0:2376\"".to_string(),
        "docker node update --label-add forge.daemon=tcp://".to_string(),
    ] {
        assert!(stderr.contains(&want), "{want:?} missing:\n{}", text(&out));
    }
    let statuses = project.forge.statuses(&sha);
    let last = statuses.last().expect("a status");
    assert_eq!(last["state"], "error", "{statuses:?}");
    let description = last["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&worker.hostname) && description.contains("forge.daemon"),
        "{description}"
    );
    let left = cluster.manager().docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        "label=forge.pull_request=2",
        "--filter",
        &format!("label=forge.repo=acme/{}", project.repo),
    ]);
    assert_eq!(left, "", "the failed launch removed its service");
}
