//! `forge-launch gc` across the cluster: finished build services go, and
//! so do the sidecar containers their builds left on the workers (asked of
//! each node's own daemon, over mTLS).

use std::time::Duration;

use super::{shared, text, wait_for, Project, Services};

#[test]
fn gc_removes_finished_builds_and_their_sidecars_on_every_node() {
    let (cluster, _hold) = shared();
    let spec = format!(
        "services:\n  web:\n    image: {}\n    command: httpd -f -p 18080\n    ports: [18080]\nexecute:\n  - wget -q -O - http://web:18080/ || true\n",
        cluster.busybox
    );
    let project = Project::new(cluster, &cluster.busybox, &spec);
    let mut services = Services {
        cluster,
        names: Vec::new(),
    };
    let pool = &cluster.nodes[1];
    let sha = Project::sha(1);
    let out = project
        .swarm(
            cluster,
            1,
            &sha,
            &["--constraint", "node.labels.forge.pool==ci"],
        )
        .output()
        .expect("run forge-launch");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    services.names.push(name.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.final_statuses(&sha, Duration::from_secs(90));
    if statuses.last().unwrap()["state"] != "success" {
        let logs: Vec<String> = pool
            .docker(&[
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label=forge.sidecar.of={name}"),
            ])
            .lines()
            .chain(
                pool.docker(&[
                    "ps",
                    "-a",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={name}"),
                ])
                .lines(),
            )
            .map(|id| {
                let out = std::process::Command::new("docker")
                    .args(["exec", &pool.container, "docker", "logs", id])
                    .output()
                    .expect("docker logs");
                format!(
                    "--- {id}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .collect();
        panic!("{statuses:?}\n{}", logs.join("\n"));
    }
    assert_eq!(cluster.task_node(&name).hostname, pool.hostname);

    // The launcher did not wait: the sidecar outlives the build on the
    // worker.
    let sidecars = || {
        pool.docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=forge.sidecar.of={name}"),
        ])
    };
    assert_ne!(sidecars(), "", "the sidecar runs on {}", pool.hostname);
    let build_stopped = || {
        pool.docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ])
        .is_empty()
    };
    wait_for(
        "the build container to stop",
        Duration::from_secs(30),
        build_stopped,
        || pool.docker(&["ps", "-a"]),
    );

    let out = cluster
        .launcher()
        .args(["gc", "--older-than", "0s", "--repo"])
        .arg(format!("acme/{}", project.repo))
        .output()
        .expect("run forge-launch gc");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        name,
        "{}",
        text(&out)
    );
    assert_eq!(sidecars(), "", "gc left the sidecar on {}", pool.hostname);
    let left =
        cluster
            .manager()
            .docker(&["service", "ls", "-q", "--filter", &format!("name={name}")]);
    assert_eq!(left, "", "gc removed the service");
    services.names.clear();
}
