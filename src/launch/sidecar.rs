//! Sidecar services (`.forge.yml` `services:`) from the launcher's side:
//! plain containers started through the daemon of the node that runs the
//! build's container, in that container's network namespace (the build
//! reaches them on 127.0.0.1; its `/etc/hosts` maps each name to
//! 127.0.0.1), never on an overlay network and publishing nothing. They are
//! labelled with the build so that they go when it goes: removed when the
//! launcher sees the build end, and reaped by `gc` when their build
//! container no longer runs.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::error::is_not_found;
use super::registry::RegistryAuth;
use super::LaunchError;
use crate::spec::{Run, Service, Spec};

/// Label: the name of the build (service or container) a sidecar belongs to.
pub const LABEL_OF: &str = "forge.sidecar.of";
/// Label: the id of the build container whose network the sidecar shares.
pub const LABEL_CONTAINER: &str = "forge.sidecar.container";
/// Label: the sidecar's name in `.forge.yml`.
pub const LABEL_NAME: &str = "forge.sidecar.name";

/// `NAME:127.0.0.1` for each service: the build's extra `/etc/hosts`
/// entries (Docker's `ExtraHosts` form).
pub fn host_entries(spec: &Spec) -> Vec<String> {
    spec.services
        .iter()
        .map(|s| format!("{}:127.0.0.1", s.name))
        .collect()
}

/// The same entries in a swarm ContainerSpec's `Hosts` form (`IP NAME`).
pub fn swarm_hosts(spec: &Spec) -> Vec<String> {
    spec.services
        .iter()
        .map(|s| format!("127.0.0.1 {}", s.name))
        .collect()
}

/// The argv of a shell- or exec-form command of a service.
fn argv(run: &Run) -> Vec<String> {
    match run {
        Run::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
        Run::Exec(argv) => argv.clone(),
    }
}

/// The container of one service, joined to `build_container`'s network.
fn container_body(
    service: &Service,
    build_name: &str,
    build_container: &str,
    labels: &HashMap<String, String>,
) -> ContainerCreateBody {
    let mut labels = labels.clone();
    labels.insert(LABEL_OF.into(), build_name.into());
    labels.insert(LABEL_CONTAINER.into(), build_container.into());
    labels.insert(LABEL_NAME.into(), service.name.clone());
    let env: Vec<String> = service
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ContainerCreateBody {
        image: Some(service.image.clone()),
        cmd: service.command.as_ref().map(argv),
        entrypoint: service.entrypoint.as_ref().map(argv),
        env: (!env.is_empty()).then_some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{build_container}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts every service of `spec` beside `build_container` on `docker` (the
/// build's node), pulling an image the node lacks. Returns the ids of the
/// containers started; on an error the ones already started are removed.
pub async fn start(
    docker: &Docker,
    spec: &Spec,
    build_name: &str,
    build_container: &str,
    labels: &HashMap<String, String>,
    registry_auth: Option<&RegistryAuth>,
) -> Result<Vec<String>, LaunchError> {
    let mut started = Vec::new();
    for service in &spec.services {
        let credentials = registry_auth.and_then(|auth| auth.for_image(&service.image));
        match start_one(
            docker,
            service,
            build_name,
            build_container,
            labels,
            credentials,
        )
        .await
        {
            Ok(id) => started.push(id),
            Err(err) => {
                remove(docker, build_name).await;
                return Err(err);
            }
        }
    }
    Ok(started)
}

async fn start_one(
    docker: &Docker,
    service: &Service,
    build_name: &str,
    build_container: &str,
    labels: &HashMap<String, String>,
    credentials: Option<DockerCredentials>,
) -> Result<String, LaunchError> {
    let name = format!("{build_name}-{}", service.name);
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let body = container_body(service, build_name, build_container, labels);
    let created = match docker
        .create_container(Some(options.clone()), body.clone())
        .await
    {
        Err(e) if is_not_found(&e) => {
            pull(docker, &service.image, credentials).await?;
            docker.create_container(Some(options), body).await
        }
        other => other,
    }
    .map_err(|e| {
        LaunchError::docker(
            format!("creating service `{}` from {}", service.name, service.image),
            e,
        )
    })?;
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| LaunchError::docker(format!("starting service `{}`", service.name), e))?;
    tracing::info!(
        "started service {} ({}) beside {build_name}",
        service.name,
        service.image
    );
    Ok(created.id)
}

async fn pull(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<(), LaunchError> {
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut progress = docker.create_image(Some(options), None, credentials);
    while let Some(step) = progress.next().await {
        step.map_err(|e| LaunchError::docker(format!("pulling {image}"), e))?;
    }
    Ok(())
}

/// Removes the sidecars of `build_name` from `docker`; failures are logged
/// (`gc` reaps what is left).
pub async fn remove(docker: &Docker, build_name: &str) {
    let label = format!("{LABEL_OF}={build_name}");
    // A busy daemon can fail a listing or a removal: try a few times.
    for _ in 0..5 {
        let left: Vec<String> = list(docker, &label)
            .await
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        if left.is_empty() {
            return;
        }
        for id in left {
            remove_container(docker, &id).await;
        }
    }
    tracing::warn!("sidecars of {build_name} may be left behind: `forge-launch gc` removes them");
}

/// Removes every sidecar on `docker` whose build container no longer runs
/// (its launcher died before removing it). Returns how many were removed.
pub async fn reap(docker: &Docker) -> usize {
    let mut removed = 0;
    for container in list(docker, LABEL_CONTAINER).await {
        let (Some(id), Some(build)) = (
            container.id,
            container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CONTAINER))
                .cloned(),
        ) else {
            continue;
        };
        let running = match docker.inspect_container(&build, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(e) if is_not_found(&e) => false,
            Err(_) => true,
        };
        if !running {
            remove_container(docker, &id).await;
            removed += 1;
        }
    }
    removed
}

/// Containers, running or not, with `label` (`KEY` or `KEY=VALUE`); none
/// when the daemon cannot list them (logged).
async fn list(docker: &Docker, label: &str) -> Vec<ContainerSummary> {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!("listing sidecars ({label}): {e}");
            Vec::new()
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => tracing::warn!("could not remove sidecar {id}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        crate::spec::parse(
            "f.yml",
            b"services:\n  db:\n    image: postgres:16\n    environment: {POSTGRES_PASSWORD: test}\n    ports: [5432]\n  web:\n    image: busybox\n    command: httpd -f -p 8080\n    entrypoint: [/bin/env]\nexecute: [make]\n",
        )
        .expect("valid")
    }

    #[test]
    fn every_service_resolves_to_loopback_in_the_build() {
        assert_eq!(host_entries(&spec()), ["db:127.0.0.1", "web:127.0.0.1"]);
        assert_eq!(swarm_hosts(&spec()), ["127.0.0.1 db", "127.0.0.1 web"]);
    }

    #[test]
    fn a_service_joins_the_build_containers_network_and_is_labelled() {
        let spec = spec();
        let labels = HashMap::from([("forge.repo".to_string(), "octo/hello".to_string())]);
        let db = container_body(&spec.services[0], "b-1", "c0ffee", &labels);
        let web = container_body(&spec.services[1], "b-1", "c0ffee", &labels);
        let host = db.host_config.as_ref().expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("container:c0ffee"));
        assert!(host.port_bindings.is_none());
        assert_eq!(db.env, Some(vec!["POSTGRES_PASSWORD=test".to_string()]));
        assert_eq!(db.cmd, None);
        let labels = db.labels.expect("labels");
        assert_eq!(labels[LABEL_OF], "b-1");
        assert_eq!(labels[LABEL_CONTAINER], "c0ffee");
        assert_eq!(labels[LABEL_NAME], "db");
        assert_eq!(labels["forge.repo"], "octo/hello");
        assert_eq!(
            web.cmd,
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "httpd -f -p 8080".into()
            ])
        );
        assert_eq!(web.entrypoint, Some(vec!["/bin/env".to_string()]));
    }
}
