//! Build images from a registry that wants a login: `--registry-auth`
//! hands the login to the swarm as X-Registry-Auth, never in the spec.

use std::time::Duration;

use base64::Engine;

use super::{shared, text, Project, Services, REGISTRY_PASSWORD, REGISTRY_USER};
use crate::common::busybox_rootfs;

const SPEC: &str = "\
execute:
  - echo pulled and ran
";

#[test]
fn a_private_image_is_pulled_with_registry_auth_and_without_it_the_build_is_an_error_naming_it() {
    let (cluster, _hold) = shared();
    let root = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(root.path());
    let name = format!("{}:1", crate::common::unique_name("forge-private"));
    let image = cluster.push_image(root.path(), &name, true);
    let project = Project::new(cluster, &image, SPEC);
    let mut services = Services {
        cluster,
        names: Vec::new(),
    };

    // No login: no node can pull the image.
    let sha = Project::sha(1);
    let out = project
        .swarm(cluster, 1, &sha, &["--start-timeout", "60s"])
        .output()
        .expect("run forge-launch");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.forge.statuses(&sha);
    let last = statuses
        .last()
        .unwrap_or_else(|| panic!("no status:\n{}", text(&out)));
    assert_eq!(last["state"], "error", "{statuses:?}");
    let description = last["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&image),
        "the error names the image: {description:?}"
    );

    // The login, in a Docker client config as `docker login` writes it.
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}"));
    let config = project._dir.path().join("docker-config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            cluster.auth_registry()
        ),
    )
    .expect("write the registry login");
    let sha = Project::sha(2);
    let out = project
        .swarm(
            cluster,
            2,
            &sha,
            &["--registry-auth", &config.display().to_string()],
        )
        .output()
        .expect("run forge-launch");
    let service = String::from_utf8_lossy(&out.stdout).trim().to_string();
    services.names.push(service.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = project.final_statuses(&sha, Duration::from_secs(60));
    assert_eq!(
        statuses.last().expect("a status")["state"],
        "success",
        "{statuses:?}"
    );

    // The swarm holds the login apart from the spec: neither the
    // service's environment nor anything else it shows carries it.
    let spec = cluster.manager().docker(&["service", "inspect", &service]);
    assert!(!spec.contains(REGISTRY_PASSWORD), "{spec}");
    assert!(!spec.contains(&auth), "{spec}");
    assert!(
        !spec.contains(&base64::engine::general_purpose::STANDARD.encode(REGISTRY_PASSWORD)),
        "{spec}"
    );
    let node = cluster.task_node(&service);
    let env = node.docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &node.docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]),
    ]);
    assert!(!env.contains(REGISTRY_PASSWORD), "{env}");
}
