//! Sidecar services (`.forge.yml` `services:`) from the launcher's side:
//! plain containers started through the daemon of the node that runs the
//! build's container, in that container's network namespace (the build
//! reaches them on 127.0.0.1; its `/etc/hosts` maps each name to
//! 127.0.0.1), never on an overlay network and publishing nothing. They are
//! labelled with the build so that they go when it goes: removed when the
//! launcher sees the build end, and reaped by `gc` when their build
//! container no longer runs.
//!
//! Each runs `/forgexec sidecar` (copied in before it starts, as into the
//! build container) wrapped around the service's own command, so that the
//! build's forgexec, which has no Docker access, can put the service's
//! output into the build log ([`crate::services::wrapper`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig, ImageConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::error::is_not_found;
use super::registry::RegistryAuth;
use super::{archive, LaunchError};
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

/// Where a build and its services are.
pub struct Beside<'a> {
    /// The build's service (swarm) or container (local) name.
    pub build_name: &'a str,
    /// Its FORGE_BUILD_ID (names the services' sockets).
    pub build_id: &'a str,
    /// The id of the build's container.
    pub container: &'a str,
    pub labels: &'a HashMap<String, String>,
    /// Logins for pulling the services' images (`--registry-auth`).
    pub registry_auth: Option<&'a RegistryAuth>,
}

/// The service's command as Docker would run it: its `entrypoint` or the
/// image's, followed by its `command`, or the image's when it sets no
/// entrypoint (an entrypoint given clears the image's command, as in
/// Docker).
fn service_argv(service: &Service, image: Option<&ImageConfig>) -> Vec<String> {
    let image_entrypoint = image.and_then(|c| c.entrypoint.clone()).unwrap_or_default();
    let image_cmd = image.and_then(|c| c.cmd.clone()).unwrap_or_default();
    let mut full = match &service.entrypoint {
        Some(run) => argv(run),
        None => image_entrypoint,
    };
    match (&service.command, &service.entrypoint) {
        (Some(run), _) => full.extend(argv(run)),
        (None, None) => full.extend(image_cmd),
        (None, Some(_)) => {}
    }
    full
}

/// The container of one service, joined to the build container's network,
/// its entrypoint the wrapper around `argv`.
fn container_body(
    service: &Service,
    beside: &Beside<'_>,
    argv: Vec<String>,
) -> ContainerCreateBody {
    let (build_name, build_container, labels) =
        (beside.build_name, beside.container, beside.labels);
    let mut labels = labels.clone();
    labels.insert(LABEL_OF.into(), build_name.into());
    labels.insert(LABEL_CONTAINER.into(), build_container.into());
    labels.insert(LABEL_NAME.into(), service.name.clone());
    let env: Vec<String> = service
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut entrypoint = vec![
        format!("/{}", archive::FORGEXEC_PATH),
        "sidecar".to_string(),
        "--build".to_string(),
        beside.build_id.to_string(),
        service.name.clone(),
        "--".to_string(),
    ];
    entrypoint.extend(argv);
    ContainerCreateBody {
        image: Some(service.image.clone()),
        entrypoint: Some(entrypoint),
        env: (!env.is_empty()).then_some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{build_container}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the container of every service of `spec` beside the build's
/// container on `docker` (the build's node), pulling an image the node
/// lacks, and copies `wrapper` ([`archive::forgexec_archive`]) into each;
/// [`start`] starts them once the build's container runs. This can happen
/// while the build's container is being prepared: only the start is on the
/// way to the build's first command. On an error the ones already created
/// are removed. Returns their ids.
pub async fn create(
    docker: &Docker,
    spec: &Spec,
    beside: &Beside<'_>,
    wrapper: &[u8],
) -> Result<Vec<String>, LaunchError> {
    let mut created = Vec::new();
    for service in &spec.services {
        match create_one(docker, service, beside, wrapper).await {
            Ok(id) => created.push(id),
            Err(err) => {
                remove(docker, beside.build_name).await;
                return Err(err);
            }
        }
    }
    Ok(created)
}

async fn create_one(
    docker: &Docker,
    service: &Service,
    beside: &Beside<'_>,
    wrapper: &[u8],
) -> Result<String, LaunchError> {
    let name = format!("{}-{}", beside.build_name, service.name);
    let credentials = beside
        .registry_auth
        .and_then(|auth| auth.for_image(&service.image));
    let config = image_config(docker, &service.image, credentials).await?;
    let body = container_body(service, beside, service_argv(service, config.as_ref()));
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            LaunchError::docker(
                format!("creating service `{}` from {}", service.name, service.image),
                e,
            )
        })?;
    super::swarm::upload(docker, &created.id, wrapper.to_vec()).await?;
    Ok(created.id)
}

/// Starts the services [`create`] made, all at once (the build's container
/// must run: they join its network). On an error all are removed.
pub async fn start(
    docker: &Docker,
    created: &[String],
    build_name: &str,
) -> Result<(), LaunchError> {
    let started = futures_util::future::join_all(created.iter().map(|id| async move {
        docker
            .start_container(id, None)
            .await
            .map_err(|e| LaunchError::docker(format!("starting sidecar {id}"), e))
    }))
    .await;
    if let Some(err) = started.into_iter().find_map(Result::err) {
        remove(docker, build_name).await;
        return Err(err);
    }
    tracing::info!("started {} service(s) beside {build_name}", created.len());
    Ok(())
}

/// The image's configuration (its entrypoint and command), pulling the
/// image when the node lacks it.
async fn image_config(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
) -> Result<Option<ImageConfig>, LaunchError> {
    let inspected = match docker.inspect_image(image).await {
        Err(e) if is_not_found(&e) => {
            pull(docker, image, credentials).await?;
            docker.inspect_image(image).await
        }
        other => other,
    }
    .map_err(|e| LaunchError::docker(format!("inspecting image {image}"), e))?;
    Ok(inspected.config)
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

/// How long a sidecar may stay created but not started before `gc` takes
/// it for the leftover of a launcher that died mid-launch.
const LAUNCH_GRACE: Duration = Duration::from_secs(600);

/// Removes every sidecar on `docker` whose build container no longer runs
/// (its launcher died before removing it). A sidecar not started yet is
/// being launched (sidecars are made before their build container starts,
/// which may be stopped or not started at that time): it stays unless it
/// is older than [`LAUNCH_GRACE`]. Returns how many were removed.
pub async fn reap(docker: &Docker) -> usize {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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
        let created = u64::try_from(container.created.unwrap_or(0)).unwrap_or(0);
        let launching = container.state == Some(ContainerSummaryStateEnum::CREATED)
            && now.saturating_sub(created) < LAUNCH_GRACE.as_secs();
        if launching {
            continue;
        }
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

    fn beside(labels: &HashMap<String, String>) -> Beside<'_> {
        Beside {
            build_name: "b-1",
            build_id: "20261207T014000123-ab12",
            container: "c0ffee",
            labels,
            registry_auth: None,
        }
    }

    #[test]
    fn a_service_joins_the_build_containers_network_and_is_labelled() {
        let spec = spec();
        let labels = HashMap::from([("forge.repo".to_string(), "octo/hello".to_string())]);
        let db = container_body(&spec.services[0], &beside(&labels), vec!["postgres".into()]);
        let host = db.host_config.as_ref().expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("container:c0ffee"));
        assert!(host.port_bindings.is_none());
        assert_eq!(db.env, Some(vec!["POSTGRES_PASSWORD=test".to_string()]));
        assert_eq!(db.cmd, None);
        assert_eq!(
            db.entrypoint,
            Some(
                [
                    "/forgexec",
                    "sidecar",
                    "--build",
                    "20261207T014000123-ab12",
                    "db",
                    "--",
                    "postgres"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        let labels = db.labels.expect("labels");
        assert_eq!(labels[LABEL_OF], "b-1");
        assert_eq!(labels[LABEL_CONTAINER], "c0ffee");
        assert_eq!(labels[LABEL_NAME], "db");
        assert_eq!(labels["forge.repo"], "octo/hello");
    }

    #[test]
    fn the_wrapped_command_is_the_one_docker_would_run() {
        let spec = spec();
        let image = ImageConfig {
            entrypoint: Some(vec!["docker-entrypoint.sh".into()]),
            cmd: Some(vec!["postgres".into()]),
            ..Default::default()
        };
        // Neither given: the image's entrypoint and command.
        assert_eq!(
            service_argv(&spec.services[0], Some(&image)),
            ["docker-entrypoint.sh", "postgres"]
        );
        // Both given: the image's are not used.
        assert_eq!(
            service_argv(&spec.services[1], Some(&image)),
            ["/bin/env", "/bin/sh", "-c", "httpd -f -p 8080"]
        );
        let mut command_only = spec.services[1].clone();
        command_only.entrypoint = None;
        assert_eq!(
            service_argv(&command_only, Some(&image)),
            ["docker-entrypoint.sh", "/bin/sh", "-c", "httpd -f -p 8080"]
        );
        // An entrypoint given clears the image's command.
        let mut entrypoint_only = spec.services[1].clone();
        entrypoint_only.command = None;
        assert_eq!(service_argv(&entrypoint_only, Some(&image)), ["/bin/env"]);
        assert!(service_argv(&spec.services[0], None).is_empty());
    }
}
