//! Builds spread over the cluster's nodes, each started through its own
//! node's daemon over mutual TLS.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use super::{shared, text, Project, Services, DAEMON_PORT};

/// Builds sleep long enough to overlap, so the swarm spreads them; pull
/// requests 3 and 6 fail.
const SPEC: &str = "\
execute:
  - echo building pull request $FORGE_PULL_REQUEST
  - sleep 4
  - test $((FORGE_PULL_REQUEST % 3)) -ne 0
";

#[test]
fn six_builds_at_once_spread_over_the_nodes_each_started_through_its_nodes_daemon_over_mtls() {
    let (cluster, _hold) = shared();
    let project = Project::new(cluster, &cluster.busybox, SPEC);
    let prs: Vec<u64> = (1..=6).collect();
    let launches: Vec<_> = prs
        .iter()
        .map(|&pr| {
            project
                .swarm(cluster, pr, &Project::sha(pr), &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start forge-launch swarm")
        })
        .collect();
    let mut services = Services {
        cluster,
        names: Vec::new(),
    };
    let mut outputs = Vec::new();
    for child in launches {
        let out = child.wait_with_output().expect("wait for forge-launch");
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !name.is_empty() {
            services.names.push(name);
        }
        outputs.push(out);
    }
    for out in &outputs {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
    }

    for &pr in &prs {
        let statuses = project.final_statuses(&Project::sha(pr), Duration::from_secs(120));
        let last = statuses.last().expect("a final status");
        let want = if pr % 3 == 0 { "failure" } else { "success" };
        assert_eq!(last["state"], want, "pull request {pr}: {statuses:?}");
        assert_eq!(last["context"], "forge/execute", "{statuses:?}");
    }

    // Where each build ran, and that its node's daemon received the copy
    // of forgexec: the daemons log every API call (`--debug`), and the
    // only way the launcher has to a node's daemon is its TLS port.
    let mut used = BTreeSet::new();
    for name in &services.names {
        let node = cluster.task_node(name);
        used.insert(node.hostname.clone());
        let container = node.docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
            "--format",
            "{{.ID}}",
        ]);
        assert!(!container.is_empty(), "no container of {name} on {node:?}");
        let log = node.daemon_log();
        let copy = log.lines().any(|l| {
            l.contains("Calling PUT ") && l.contains(&format!("/containers/{container}/archive"))
        });
        assert!(
            copy,
            "{name} ran on {} but its daemon did not receive the executor copy (PUT .../containers/{container}/archive); its API calls:\n{}",
            node.hostname,
            log.lines()
                .filter(|l| l.contains("Calling "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        used.len() >= 2,
        "six builds at once all ran on {used:?}: the swarm should spread them"
    );

    // No daemon has a plain TCP port, and the TLS port refuses plain HTTP.
    for node in &cluster.nodes {
        let plain = SocketAddr::from((node.ip, 2375));
        assert!(
            TcpStream::connect_timeout(&plain, Duration::from_secs(2)).is_err(),
            "{} has a plain TCP daemon port",
            node.hostname
        );
        let tls = SocketAddr::from((node.ip, DAEMON_PORT));
        let mut stream = TcpStream::connect_timeout(&tls, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{}: TLS port {tls}: {e}", node.hostname));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\n\r\n")
            .expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            !answer.contains("\r\n\r\nOK"),
            "{} answered plain HTTP on its TLS port: {answer}",
            node.hostname
        );
    }
}
