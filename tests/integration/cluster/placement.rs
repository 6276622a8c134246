//! Resources and `--constraint` on the cluster: builds go to the labelled
//! node with their request reserved and limited; a request over the cap is
//! refused before anything exists; a build no node can take is queued.

use std::process::Stdio;
use std::time::Duration;

use super::{shared, text, Project, Services};

const SPEC: &str = "\
resources:
  cpus: 0.5
  memory: 96MiB
execute:
  - sleep 2
";

fn limits() -> Vec<&'static str> {
    vec![
        "--constraint",
        "node.labels.forge.pool==ci",
        "--max-cpus",
        "1",
        "--max-memory",
        "256m",
    ]
}

#[test]
fn builds_with_resources_and_a_constraint_run_on_the_labelled_node_only() {
    let (cluster, _hold) = shared();
    let project = Project::new(cluster, &cluster.busybox, SPEC);
    let mut services = Services {
        cluster,
        names: Vec::new(),
    };
    let launches: Vec<_> = (1..=3)
        .map(|pr| {
            project
                .swarm(cluster, pr, &Project::sha(pr), &limits())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start forge-launch")
        })
        .collect();
    for child in launches {
        let out = child.wait_with_output().expect("wait");
        services
            .names
            .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let pool = &cluster.nodes[1];
    for name in &services.names {
        assert_eq!(
            cluster.task_node(name).hostname,
            pool.hostname,
            "{name} ran outside the pool"
        );
        let resources = cluster.manager().docker(&[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.Resources}}",
            name,
        ]);
        let resources: serde_json::Value = serde_json::from_str(&resources).expect("json");
        for kind in ["Limits", "Reservations"] {
            assert_eq!(resources[kind]["NanoCPUs"], 500_000_000, "{resources}");
            assert_eq!(resources[kind]["MemoryBytes"], 96 << 20, "{resources}");
        }
    }
    for pr in 1..=3 {
        let statuses = project.final_statuses(&Project::sha(pr), Duration::from_secs(60));
        assert_eq!(statuses.last().unwrap()["state"], "success", "{statuses:?}");
    }
}

#[test]
fn a_request_over_the_cap_is_an_error_before_anything_exists_and_a_build_no_node_takes_is_queued() {
    let (cluster, _hold) = shared();
    let greedy = Project::new(
        cluster,
        &cluster.busybox,
        "resources:\n  cpus: 4\nexecute:\n  - echo never\n",
    );
    let sha = Project::sha(1);
    let out = greedy
        .swarm(cluster, 1, &sha, &limits())
        .output()
        .expect("run forge-launch");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let statuses = greedy.forge.statuses(&sha);
    let last = statuses.last().expect("an error status");
    assert_eq!(last["state"], "error", "{statuses:?}");
    assert!(
        last["description"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-cpus"),
        "{statuses:?}"
    );
    let left = cluster.manager().docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=forge.repo=acme/{}", greedy.repo),
    ]);
    assert_eq!(left, "", "nothing was created");

    // More memory than any node has: the swarm keeps the task pending.
    let project = Project::new(cluster, &cluster.busybox, "execute:\n  - echo never\n");
    let sha = Project::sha(2);
    let out = project
        .swarm(
            cluster,
            2,
            &sha,
            &["--memory", "100g", "--start-timeout", "5s"],
        )
        .output()
        .expect("run forge-launch");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.forge.statuses(&sha);
    let description = statuses.last().expect("a status")["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The status (140 characters at most) says it was queued; the
    // launcher's message says why.
    assert!(
        description.contains("still queued after 5s"),
        "{statuses:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no node can take it") && stderr.contains("insufficient resources"),
        "{}",
        text(&out)
    );
}
