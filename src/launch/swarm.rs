//! `forge-launch swarm`: one build as one swarm service. Validates the spec
//! before touching Docker, removes the pull request's stale services,
//! creates the service, settles races (the newest service of a pull request
//! wins), waits for the task's container, copies forgexec and the token in
//! on the task's node and starts it; with `--wait` follows the build to its
//! end. Every failure after the service exists removes it again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bollard::Docker;
use futures_util::StreamExt;

use super::binary::{self, Binaries};
use super::forge::{CommitStatus, Forge, SpecFetch, StatusState};
use super::node::{self, NodeAccess};
use super::plan;
use super::service::{self, ResourcePolicy, ServiceRequest, Wait};
use super::sidecar;
use super::{archive, LaunchError};
use crate::facts::BuildContext;
use crate::fsread::{self, Links};
use crate::secret::Secret;
use crate::spec::{self, Spec};

/// Where the `.forge.yml` comes from.
#[derive(Debug, Clone)]
pub enum SpecSource {
    File(PathBuf),
    /// The contents API at the head commit (needs `--api-url`).
    Api,
}

/// Everything `forge-launch swarm` was asked to do.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// The build's facts, its id included; a pull request's build.
    pub build: BuildContext,
    pub spec: SpecSource,
    pub token: Option<Secret>,
    pub forgexec: Binaries,
    pub networks: Vec<String>,
    /// `--constraint`: where the swarm may place builds.
    pub constraints: Vec<String>,
    /// What a build gets of its `resources:` request.
    pub resources: ResourcePolicy,
    pub node_access: NodeAccess,
    pub wait: bool,
    pub start_timeout: Duration,
    /// Labels put on the service besides the build's own (serve records
    /// the delivery that asked for it).
    pub labels: HashMap<String, String>,
    /// Shared by concurrent launches: how many copy forgexec into their
    /// container at once (`None`: no bound, one launch per process).
    pub copy_slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Started; without `--wait` the launcher returns here.
    Started {
        service: String,
        /// Where the build runs: its service, node and container ids.
        running: Running,
    },
    /// `--wait`: the build ended with this exit code; service removed.
    Finished { service: String, exit_code: i64 },
    /// A newer launch for the same pull request took over.
    Superseded { service: String },
}

/// A started build's service, node and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub service_id: String,
    pub node_id: String,
    pub container_id: String,
}

/// Parses the spec with the same library code as `forgexec validate` and
/// insists on an image and on the build's action.
pub fn parse_spec(label: &str, bytes: &[u8], action: &str) -> Result<Spec, LaunchError> {
    let spec = crate::spec::parse(label, bytes).map_err(|e| LaunchError::Spec(Box::new(e)))?;
    if spec.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(LaunchError::NoImage {
            label: label.to_string(),
        });
    }
    if spec.action(action).is_none() {
        return Err(LaunchError::UnknownAction {
            label: label.to_string(),
            action: action.to_string(),
            known: spec.action_names().iter().map(|a| a.to_string()).collect(),
        });
    }
    Ok(spec)
}

/// Runs `forge-launch swarm`.
pub async fn launch(opts: &SwarmOptions) -> Result<Outcome, LaunchError> {
    let forge = Forge::new(opts.token.clone())?;
    let reporter = Reporter {
        forge: &forge,
        opts,
    };
    let spec = match load_spec(opts, &forge).await {
        Ok(spec) => spec,
        Err(err) => {
            reporter.error(&err).await;
            return Err(err);
        }
    };
    let result = launch_with_spec(opts, &spec).await;
    if let Err(err) = &result {
        reporter.error(err).await;
    }
    result
}

async fn load_spec(opts: &SwarmOptions, forge: &Forge) -> Result<Spec, LaunchError> {
    let build = &opts.build;
    match &opts.spec {
        SpecSource::File(path) => {
            let bytes = fsread::read_regular(path, Links::Follow, spec::MAX_FILE_BYTES as u64)?;
            parse_spec(&path.display().to_string(), &bytes, &build.action)
        }
        SpecSource::Api => {
            match forge
                .fetch_spec(&build.api_url, &build.owner, &build.repo, &build.sha)
                .await?
            {
                SpecFetch::Found(bytes) => parse_spec(".forge.yml", &bytes, &build.action),
                SpecFetch::Missing => Err(LaunchError::NoSpec {
                    commit: format!("{}/{}@{}", build.owner, build.repo, build.sha),
                }),
            }
        }
    }
}

/// Posts the `error` status of a launch that failed before forgexec ran.
struct Reporter<'a> {
    forge: &'a Forge,
    opts: &'a SwarmOptions,
}

impl Reporter<'_> {
    async fn error(&self, err: &LaunchError) {
        let build = &self.opts.build;
        let Some(url) = &build.status_url else {
            return;
        };
        let renderer = crate::render::Renderer::new(self.forge.masker().clone());
        let status = CommitStatus::new(
            StatusState::Error,
            build.status_context.clone(),
            format!(
                "forge-launch: {}",
                match err.plain_cause() {
                    Some(text) => renderer.text(&text),
                    None => renderer.error(err),
                }
            ),
            build.target_url.clone(),
        );
        if let Err(post) = self.forge.post_status(url, &status).await {
            tracing::warn!(
                "{}",
                renderer.text(&format!(
                    "could not post the error status: {}",
                    renderer.error(&post)
                ))
            );
        }
    }
}

async fn launch_with_spec(opts: &SwarmOptions, spec: &Spec) -> Result<Outcome, LaunchError> {
    let build = &opts.build;
    let pr_number = build.pull_request.unwrap_or(0);
    // Refused before anything is created or removed.
    let limits = opts.resources.resolve(&spec.resources)?;
    let docker = node::connect_manager().await?;
    let info = docker
        .info()
        .await
        .map_err(|e| LaunchError::docker("reading the daemon's info", e))?;
    let local_node = info
        .swarm
        .and_then(|s| s.node_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| LaunchError::Docker {
            action: "reading the swarm state".into(),
            message: "this daemon is not part of a swarm; run `docker swarm init` or point DOCKER_HOST at a manager".into(),
        })?;

    // Before anything changes: is there a node and a binary for this build?
    let image = spec.image.clone().unwrap_or_default();
    let platforms = binary::swarm_placement(&docker, &opts.forgexec, &image).await?;

    let name = plan::build_name(build);
    let env = plan::environment(&spec.environment, build);
    tracing::debug!(
        "container environment: {:?}",
        env.keys().collect::<Vec<_>>()
    );
    let mut labels = plan::labels(build);
    for (key, value) in &opts.labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let request = ServiceRequest {
        name: name.clone(),
        image,
        env: plan::env_list(&env),
        labels,
        networks: opts.networks.clone(),
        ports: spec.ports.clone(),
        limits,
        platforms,
        hosts: sidecar::swarm_hosts(spec),
        constraints: opts.constraints.clone(),
    };

    // A newer push makes the running builds of this pull request stale.
    let filter = plan::pull_request_filter(&build.owner, &build.repo, pr_number);
    for stale in service::list(&docker, filter.clone()).await? {
        tracing::info!("removing stale build {}", stale.name);
        service::remove(&docker, &stale.id).await?;
        // Its sidecars, where this daemon runs them (elsewhere: gc).
        sidecar::remove(&docker, &stale.name).await;
    }

    let id = service::create(&docker, service::service_spec(&request)).await?;
    tracing::info!("created service {name} ({id})");
    after_create(opts, spec, &docker, &local_node, &id, &name).await
}

/// Finishes the launch of a build service that exists but whose container
/// was never started (a launcher stopped in between): the same steps as
/// after creation.
pub async fn resume(
    opts: &SwarmOptions,
    service_id: &str,
    name: &str,
) -> Result<Outcome, LaunchError> {
    let forge = Forge::new(opts.token.clone())?;
    let docker = node::connect_manager().await?;
    let info = docker
        .info()
        .await
        .map_err(|e| LaunchError::docker("reading the daemon's info", e))?;
    let local_node = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
    // Read again for its sidecar services (it was valid at creation).
    let result = match load_spec(opts, &forge).await {
        Ok(spec) => after_create(opts, &spec, &docker, &local_node, service_id, name).await,
        Err(err) => Err(err),
    };
    if let Err(err) = &result {
        Reporter {
            forge: &forge,
            opts,
        }
        .error(err)
        .await;
    }
    result
}

/// Runs the created service; every failure removes it again.
async fn after_create(
    opts: &SwarmOptions,
    spec: &Spec,
    docker: &Docker,
    local_node: &str,
    id: &str,
    name: &str,
) -> Result<Outcome, LaunchError> {
    match run_service(opts, spec, docker, local_node, id, name).await {
        Ok(outcome) => Ok(outcome),
        // A racing or newer launch removed our service midway: its objects
        // vanish under us (404s), which is not a failure of this build.
        Err(err) if !service::exists(docker, id).await.unwrap_or(true) => {
            tracing::info!("{name} was removed while launching ({err})");
            Ok(Outcome::Superseded {
                service: name.to_string(),
            })
        }
        Err(err) => {
            if let Err(cleanup) = service::remove(docker, id).await {
                tracing::warn!("could not remove service {name}: {cleanup}");
            }
            Err(err)
        }
    }
}

/// After creation: settle races, place, inject, start, and maybe follow.
async fn run_service(
    opts: &SwarmOptions,
    spec: &Spec,
    docker: &Docker,
    local_node: &str,
    id: &str,
    name: &str,
) -> Result<Outcome, LaunchError> {
    let build = &opts.build;
    let superseded = || Outcome::Superseded {
        service: name.to_string(),
    };
    // Every launcher lists after creating its own service and keeps only the
    // newest; a later launch always sees ours, so exactly one survives.
    let filter =
        plan::pull_request_filter(&build.owner, &build.repo, build.pull_request.unwrap_or(0));
    let mine = service::list(docker, filter).await?;
    let keys: Vec<(String, String)> = mine
        .iter()
        .map(|s| (s.created_at.clone(), s.id.clone()))
        .collect();
    match plan::winner(&keys) {
        Some((_, winner)) if winner == id => {
            for other in mine.iter().filter(|s| s.id != id) {
                tracing::info!("removing older racing build {}", other.name);
                service::remove(docker, &other.id).await?;
                sidecar::remove(docker, &other.name).await;
            }
        }
        _ => {
            service::remove(docker, id).await?;
            return Ok(superseded());
        }
    }

    let placed = match service::wait_for_container(docker, id, name, opts.start_timeout).await? {
        Wait::Ready(placed) => placed,
        Wait::Gone => return Ok(superseded()),
    };
    let node_docker = node_daemon(docker, local_node, &placed.node_id, &opts.node_access).await?;
    // The binary and its archive are megabytes each: a service launching
    // many builds at once copies a few at a time.
    let _slot = match &opts.copy_slots {
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    let forgexec = binary::for_task(
        docker,
        &node_docker,
        &placed.node_id,
        &placed.container_id,
        &opts.forgexec,
    )
    .await?;
    let owner = container_owner(&node_docker, &placed.container_id).await?;
    // Megabytes copied: off the async workers, like reading the binary.
    let token = opts.token.clone();
    let wrapped = !spec.services.is_empty();
    let (tar, wrapper) = tokio::task::spawn_blocking(move || {
        let tar = archive::executor_archive(&forgexec, token.as_ref(), owner)?;
        // The sidecars' entrypoint, copied into each of them.
        let wrapper = match wrapped {
            true => archive::forgexec_archive(&forgexec)?,
            false => Vec::new(),
        };
        Ok((tar, wrapper))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|built| built)
    .map_err(|e| LaunchError::io("building the executor archive", e))?;
    // The sidecars are made while the executor is copied; they start once
    // the build's container runs (they join its network).
    let labels = plan::labels(build);
    let beside = sidecar::Beside {
        build_name: name,
        build_id: build.build_id.as_str(),
        container: &placed.container_id,
        labels: &labels,
    };
    let (copied, sidecars) = tokio::join!(
        upload(&node_docker, &placed.container_id, tar),
        sidecar::create(&node_docker, spec, &beside, &wrapper),
    );
    let started = match copied {
        Ok(()) => node_docker
            .start_container(&placed.container_id, None)
            .await
            .map_err(|e| {
                LaunchError::docker(format!("starting container {}", placed.container_id), e)
            }),
        Err(err) => Err(err),
    };
    if let Err(err) = started {
        sidecar::remove(&node_docker, name).await;
        return Err(err);
    }
    drop(_slot);
    tracing::info!("started {name} on node {}", placed.node_id);
    // forgexec waits for their ports and reports one that never opens.
    if let Err(err) = match sidecars {
        Ok(created) if created.is_empty() => Ok(()),
        Ok(created) => sidecar::start(&node_docker, &created, name).await,
        Err(err) => Err(err),
    } {
        tracing::error!("{err}");
    }

    if !opts.wait {
        return Ok(Outcome::Started {
            service: name.to_string(),
            running: Running {
                service_id: id.to_string(),
                node_id: placed.node_id,
                container_id: placed.container_id,
            },
        });
    }
    let code = tokio::select! {
        code = follow(&node_docker, &placed.container_id) => code,
        _ = tokio::signal::ctrl_c() => {
            return Err(LaunchError::Docker {
                action: "waiting for the build".into(),
                message: "interrupted; the service was removed".into(),
            });
        }
    };
    sidecar::remove(&node_docker, name).await;
    let code = match code {
        Ok(code) => code,
        Err(err) => {
            if !service::exists(docker, id).await? {
                return Ok(superseded());
            }
            return Err(err);
        }
    };
    if !service::exists(docker, id).await? {
        return Ok(superseded());
    }
    service::remove(docker, id).await?;
    Ok(Outcome::Finished {
        service: name.to_string(),
        exit_code: code,
    })
}

/// The daemon of node `node_id`: the manager's own connection when the
/// node is this one, else the node's address with `access`.
pub async fn node_daemon(
    docker: &Docker,
    local_node: &str,
    node_id: &str,
    access: &NodeAccess,
) -> Result<Docker, LaunchError> {
    let endpoint = if node_id == local_node {
        node::Endpoint::Local
    } else {
        let node = docker
            .inspect_node(node_id)
            .await
            .map_err(|e| LaunchError::docker(format!("inspecting node {node_id}"), e))?;
        node::select_endpoint(node_id, local_node, &node::NodeAddress::of(&node), access)?
    };
    node::connect(&endpoint, docker).await
}

/// The owner of the files copied into `container`: its configured user
/// (`USER` of the image or the service), with names looked up in the
/// container's own `/etc/passwd` and `/etc/group`.
pub async fn container_owner(
    docker: &Docker,
    container: &str,
) -> Result<archive::Owner, LaunchError> {
    let inspect = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| LaunchError::docker(format!("inspecting container {container}"), e))?;
    let user = inspect.config.and_then(|c| c.user).unwrap_or_default();
    let numeric = user
        .split(':')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    let (passwd, group) = if user.trim().is_empty() || (numeric && user.contains(':')) {
        (None, None)
    } else {
        (
            read_file(docker, container, "/etc/passwd").await,
            read_file(docker, container, "/etc/group").await,
        )
    };
    archive::resolve_owner(&user, passwd.as_deref(), group.as_deref()).map_err(|reason| {
        LaunchError::Docker {
            action: format!("finding the user of container {container}"),
            message: reason,
        }
    })
}

/// A small text file of the container (through the archive API), if there.
async fn read_file(docker: &Docker, container: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.ok()?);
    }
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    entry.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Copies the executor archive into the container at `/` and starts it.
pub async fn inject_and_start(
    docker: &Docker,
    container: &str,
    tar: Vec<u8>,
) -> Result<(), LaunchError> {
    upload(docker, container, tar).await?;
    docker
        .start_container(container, None)
        .await
        .map_err(|e| LaunchError::docker(format!("starting container {container}"), e))
}

/// Extracts a tar stream at `/` in the container.
pub async fn upload(docker: &Docker, container: &str, tar: Vec<u8>) -> Result<(), LaunchError> {
    let options = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
        .path("/")
        .build();
    docker
        .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
        .await
        .map_err(|e| LaunchError::docker(format!("copying into container {container}"), e))
}

/// Streams the container's output to stdout and returns its exit code.
pub async fn follow(docker: &Docker, container: &str) -> Result<i64, LaunchError> {
    use std::io::Write;
    // Builds outlive the per-request timeout.
    let streaming = docker.clone().with_timeout(Duration::from_secs(7 * 86_400));
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = streaming.logs(container, Some(options));
    while let Some(chunk) = logs.next().await {
        match chunk {
            Ok(out) => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out.into_bytes());
                let _ = stdout.flush();
            }
            Err(e) => {
                tracing::warn!("log stream of {container} ended: {e}");
                break;
            }
        }
    }
    let mut wait = streaming.wait_container(
        container,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    match wait.next().await {
        Some(Ok(resp)) => Ok(resp.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(LaunchError::docker(
            format!("waiting for container {container}"),
            e,
        )),
        None => Err(LaunchError::Docker {
            action: format!("waiting for container {container}"),
            message: "the daemon closed the wait without an exit code".into(),
        }),
    }
}

/// `forge-launch gc`: removes forge build services (of one repository when
/// `repo` is given) created more than `older_than` ago whose container is
/// not running (finished, never started, or gone). Returns the names removed.
pub async fn gc(
    older_than: Duration,
    repo: Option<(String, String)>,
    access: &NodeAccess,
) -> Result<Vec<String>, LaunchError> {
    let docker = node::connect_manager().await?;
    let info = docker
        .info()
        .await
        .map_err(|e| LaunchError::docker("reading the daemon's info", e))?;
    let local_node = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let filter = match &repo {
        Some((owner, name)) => plan::repo_filter(owner, name),
        None => plan::all_builds_filter(),
    };
    let reaped = sidecar::reap(&docker).await;
    if reaped > 0 {
        tracing::info!("removed {reaped} sidecar container(s) of finished builds");
    }
    for svc in service::list(&docker, filter).await? {
        let age = plan::parse_timestamp(&svc.created_at)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if age < older_than {
            continue;
        }
        if build_is_running(&docker, &local_node, &svc.id, access).await? {
            continue;
        }
        if service::remove(&docker, &svc.id).await? {
            removed.push(svc.name);
        }
    }
    Ok(removed)
}

/// Whether the container of a build service is running (our start makes
/// the swarm task "failed" while the build runs, so ask the node).
pub(crate) async fn build_is_running(
    docker: &Docker,
    local_node: &str,
    service_id: &str,
    access: &NodeAccess,
) -> Result<bool, LaunchError> {
    let filters =
        std::collections::HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
    let tasks = docker
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| LaunchError::docker("listing tasks", e))?;
    for task in tasks {
        let Some(container) = task
            .status
            .and_then(|s| s.container_status)
            .and_then(|c| c.container_id)
        else {
            continue;
        };
        let node_id = task.node_id.unwrap_or_default();
        let node_docker = node_daemon(docker, local_node, &node_id, access).await?;
        match node_docker.inspect_container(&container, None).await {
            Ok(c) => {
                if c.state.and_then(|s| s.running).unwrap_or(false) {
                    return Ok(true);
                }
            }
            Err(e) if super::error::is_not_found(&e) => {}
            Err(e) => return Err(LaunchError::docker(format!("inspecting {container}"), e)),
        }
    }
    Ok(false)
}
