//! Launch latency on the cluster: invocation of `forge-launch swarm --wait`
//! to the build's first command, for a build placed on the manager (the
//! launcher's own daemon) and on a worker (reached over mutual TLS).
//! FORGE_CLUSTER_LATENCY_RUNS of each, interleaved (default 2);
//! `benches/cluster_latency.sh` runs it with a release build and 10 runs
//! for docs/launcher.md. The first command prints /proc/uptime, which the
//! nodes' containers share with the host.

use std::time::Duration;

use super::{shared, text, Cluster, Node, Project};
use crate::serve::{env_count, first_command_uptime, median_ms, uptime};

const SPEC: &str = "\
execute:
  - echo UPTIME=$(cat /proc/uptime)
";

/// Seconds from invocation to the first command of a build on `node`.
fn launch_on(cluster: &Cluster, project: &Project, node: &Node, pr: u64) -> f64 {
    let sha = Project::sha(pr);
    let start = uptime();
    let out = project
        .swarm(
            cluster,
            pr,
            &sha,
            &[
                "--wait",
                "--constraint",
                &format!("node.hostname=={}", node.hostname),
            ],
        )
        .output()
        .expect("run forge-launch swarm");
    assert!(out.status.success(), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let first = first_command_uptime(&all)
        .unwrap_or_else(|| panic!("no UPTIME line from the build:\n{}", text(&out)));
    let statuses = project.final_statuses(&sha, Duration::from_secs(30));
    assert_eq!(statuses.last().unwrap()["state"], "success", "{statuses:?}");
    first - start
}

#[test]
fn launch_latency_on_the_manager_and_on_a_worker() {
    let runs = env_count("FORGE_CLUSTER_LATENCY_RUNS", 2).max(1);
    let (cluster, _hold) = shared();
    let project = Project::new(cluster, &cluster.busybox, SPEC);
    let (manager, worker) = (cluster.manager(), &cluster.nodes[2]);
    // Each node pulls the image once, uncounted.
    launch_on(cluster, &project, manager, 1);
    launch_on(cluster, &project, worker, 2);
    let (mut on_manager, mut on_worker) = (Vec::new(), Vec::new());
    for run in 0..runs as u64 {
        on_manager.push(launch_on(cluster, &project, manager, 10 + 2 * run));
        on_worker.push(launch_on(cluster, &project, worker, 11 + 2 * run));
    }
    for t in on_manager.iter().chain(&on_worker) {
        assert!(*t > 0.0, "a first command ran before its invocation: {t}");
    }
    eprintln!(
        "cluster latency: {runs} runs each, invocation to first command, median \
         on the manager {:.0} ms, on a worker (mTLS) {:.0} ms",
        median_ms(&mut on_manager),
        median_ms(&mut on_worker)
    );
}
