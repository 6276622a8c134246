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
use super::registry::RegistryAuth;
use super::service::{self, ResourcePolicy, ServiceRequest, Wait};
use super::sidecar;
use super::watch::{self, Ending};
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
    /// `--retry-lost`: how many times a build lost with its node is
    /// launched again (with `--wait`; serve follows its own builds).
    pub retry_lost: u32,
    pub start_timeout: Duration,
    /// Labels put on the service besides the build's own (serve records
    /// the delivery that asked for it).
    pub labels: HashMap<String, String>,
    /// Shared by concurrent launches: how many copy forgexec into their
    /// container at once (`None`: no bound, one launch per process).
    pub copy_slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// `--registry-auth`: logins for pulling build and sidecar images.
    pub registry_auth: Option<std::sync::Arc<RegistryAuth>>,
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
    launch_attempts(opts.clone()).await.1
}

/// [`launch`], also returning the options of the last attempt: a retry
/// after a lost node has its own build id, constraints and retry label.
pub async fn launch_attempts(opts: SwarmOptions) -> (SwarmOptions, Result<Outcome, LaunchError>) {
    let forge = match Forge::new(opts.token.clone()) {
        Ok(forge) => forge,
        Err(err) => return (opts, Err(err.into())),
    };
    let spec = match load_spec(&opts, &forge).await {
        Ok(spec) => spec,
        Err(err) => {
            Reporter {
                forge: &forge,
                opts: &opts,
            }
            .error(&err)
            .await;
            return (opts, Err(err));
        }
    };
    let mut attempt = opts;
    loop {
        let result = launch_with_spec(&attempt, &spec).await;
        let reporter = Reporter {
            forge: &forge,
            opts: &attempt,
        };
        match result {
            // The lost attempt's service is gone; its final word is the
            // retry's (only the last attempt's loss is final).
            Err(LaunchError::NodeLost { node, node_id })
                if retries_of(&attempt) < attempt.retry_lost =>
            {
                let next = retry_options(&attempt, &node_id);
                let text = watch::retry_text(retries_of(&next), attempt.retry_lost, &node);
                tracing::warn!("{}: {text}", plan::build_name(&attempt.build));
                reporter.pending(&text).await;
                attempt = next;
            }
            Err(err) => {
                reporter.error(&err).await;
                return (attempt, Err(err));
            }
            done => return (attempt, done),
        }
    }
}

/// Which retry an attempt is (its [`plan::label::RETRY`] label; 0 for the
/// first launch).
pub fn retries_of(opts: &SwarmOptions) -> u32 {
    opts.labels
        .get(plan::label::RETRY)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The next attempt of a build lost with node `lost_node`: a new build id
/// (so a new service), kept off that node, labelled with its number.
pub fn retry_options(opts: &SwarmOptions, lost_node: &str) -> SwarmOptions {
    let mut next = opts.clone();
    next.build.build_id = plan::new_build_id();
    let avoid = watch::avoid_constraint(lost_node);
    if !next.constraints.contains(&avoid) {
        next.constraints.push(avoid);
    }
    next.labels.insert(
        plan::label::RETRY.to_string(),
        (retries_of(opts) + 1).to_string(),
    );
    next
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
    /// The token's and the registry logins' masker.
    fn masker(&self) -> crate::run::output::Masker {
        let registry = self.opts.registry_auth.iter().flat_map(|a| a.secrets());
        crate::run::output::Masker::new(
            self.opts
                .token
                .iter()
                .chain(registry)
                .map(crate::secret::Secret::expose),
        )
    }

    /// A `pending` status (a retry's), best effort.
    async fn pending(&self, text: &str) {
        let build = &self.opts.build;
        let Some(url) = &build.status_url else {
            return;
        };
        let renderer = crate::render::Renderer::new(self.masker());
        let status = CommitStatus::new(
            StatusState::Pending,
            build.status_context.clone(),
            renderer.text(text),
            build.target_url.clone(),
        );
        if let Err(post) = self.forge.post_status(url, &status).await {
            tracing::warn!(
                "{}",
                renderer.text(&format!(
                    "could not post the pending status: {}",
                    renderer.error(&post)
                ))
            );
        }
    }

    async fn error(&self, err: &LaunchError) {
        let build = &self.opts.build;
        let Some(url) = &build.status_url else {
            return;
        };
        let renderer = crate::render::Renderer::new(self.masker());
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
    let credentials = opts
        .registry_auth
        .as_ref()
        .and_then(|auth| auth.for_image(&image));
    let platforms =
        binary::swarm_placement(&docker, &opts.forgexec, &image, credentials.clone()).await?;

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
    let filter = plan::lane_filter(build, &opts.labels);
    for stale in service::list(&docker, filter.clone()).await? {
        tracing::info!("removing stale build {}", stale.name);
        remove_replaced(&docker, &local_node, &stale, &opts.node_access).await?;
    }

    let id = service::create(&docker, service::service_spec(&request), credentials).await?;
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
    let local_node = node::local_node_id(&docker).await?;
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

/// Removes a build service a newer launch replaces (the node's agent stops
/// its container with SIGTERM and the grace period: forgexec reports the
/// build cancelled), then its sidecars, on whichever node runs them. A node
/// that does not answer keeps them until `gc`.
async fn remove_replaced(
    docker: &Docker,
    local_node: &str,
    replaced: &service::Listed,
    access: &NodeAccess,
) -> Result<(), LaunchError> {
    let nodes = service::task_nodes(docker, &replaced.id).await;
    service::remove(docker, &replaced.id).await?;
    for node_id in nodes {
        // A node that went down took them with it.
        if let Ok(node) = docker.inspect_node(&node_id).await {
            if watch::node_seen(&node) == watch::NodeSeen::Down {
                continue;
            }
        }
        let reached = tokio::time::timeout(
            NODE_CONNECT,
            node_daemon(docker, local_node, &node_id, access),
        )
        .await;
        match reached {
            Ok(Ok(node_docker)) => {
                let removal = sidecar::remove(&node_docker, &replaced.name);
                if tokio::time::timeout(SIDECAR_REMOVAL, removal)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "sidecars of {} on node {node_id}: no answer; `forge-launch gc` removes them",
                        replaced.name
                    );
                }
            }
            Ok(Err(err)) => tracing::warn!("sidecars of {}: {err}", replaced.name),
            Err(_) => tracing::warn!(
                "sidecars of {}: node {node_id} did not answer within {}s",
                replaced.name,
                NODE_CONNECT.as_secs()
            ),
        }
    }
    Ok(())
}

/// How long reaching a node's daemon may take when it is not the build's
/// own (a replaced build's node).
const NODE_CONNECT: Duration = Duration::from_secs(10);

/// How long removing a finished build's sidecars may take.
pub const SIDECAR_REMOVAL: Duration = Duration::from_secs(60);

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
    let filter = plan::lane_filter(build, &opts.labels);
    let mine = service::list(docker, filter).await?;
    let keys: Vec<(String, String)> = mine
        .iter()
        .map(|s| (s.created_at.clone(), s.id.clone()))
        .collect();
    match plan::winner(&keys) {
        Some((_, winner)) if winner == id => {
            for other in mine.iter().filter(|s| s.id != id) {
                tracing::info!("removing older racing build {}", other.name);
                remove_replaced(docker, local_node, other, &opts.node_access).await?;
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
    // A node that goes down now never answers: the launch on it ends when
    // the manager sees it down.
    let node_id = placed.node_id.clone();
    let nodes = watch::NodeView::default();
    let node_docker = tokio::select! {
        biased;
        started = start_on_node(opts, spec, docker, local_node, name, &placed) => started?,
        node = watch::node_lost(&nodes, docker, &node_id) => {
            return Err(LaunchError::NodeLost { node, node_id });
        }
    };
    let running = Running {
        service_id: id.to_string(),
        node_id: placed.node_id,
        container_id: placed.container_id,
    };
    if !opts.wait {
        return Ok(Outcome::Started {
            service: name.to_string(),
            running,
        });
    }
    let ending = tokio::select! {
        ending = watch::to_end(&nodes, docker, local_node, &running, &opts.node_access, true) => ending,
        _ = tokio::signal::ctrl_c() => {
            return Err(LaunchError::Docker {
                action: "waiting for the build".into(),
                message: "interrupted; the service was removed".into(),
            });
        }
    };
    // Sidecars run beside the build: gone with a lost node, removed
    // (within a bound: the node may be failing) otherwise.
    if !matches!(ending, Ok(Ending::NodeLost { .. })) {
        let _ = tokio::time::timeout(SIDECAR_REMOVAL, sidecar::remove(&node_docker, name)).await;
    }
    // A newer launch removed the service: whatever the ending, it is the
    // newer build's turn.
    if !service::exists(docker, id).await? {
        return Ok(superseded());
    }
    let code = match ending? {
        Ending::Exited { code, .. } => code,
        // The caller removes the service.
        Ending::NodeLost { node, node_id } => return Err(LaunchError::NodeLost { node, node_id }),
        Ending::Removed => {
            return Err(LaunchError::Docker {
                action: format!("waiting for container {}", running.container_id),
                message: "the container was removed before it ended".into(),
            })
        }
    };
    service::remove(docker, id).await?;
    Ok(Outcome::Finished {
        service: name.to_string(),
        exit_code: code,
    })
}

/// On the task's node: copies forgexec and the token in, starts the
/// container and its sidecars; returns the node's daemon.
async fn start_on_node(
    opts: &SwarmOptions,
    spec: &Spec,
    docker: &Docker,
    local_node: &str,
    name: &str,
    placed: &service::Placed,
) -> Result<Docker, LaunchError> {
    let build = &opts.build;
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
        registry_auth: opts.registry_auth.as_deref(),
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

    Ok(node_docker)
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
    // Builds outlive the per-request timeout.
    let streaming = docker.clone().with_timeout(Duration::from_secs(7 * 86_400));
    stream_logs(&streaming, container).await;
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

/// Copies the container's output to stdout until the stream ends.
pub async fn stream_logs(docker: &Docker, container: &str) {
    use std::io::Write;
    let options = bollard::query_parameters::LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(container, Some(options));
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
}

/// `forge-launch gc`: removes forge build services (of one repository when
/// `repo` is given) created more than `older_than` ago whose container is
/// not running (finished, never started, or gone), and on every node the
/// sidecars whose build no longer runs. Returns the names of the services
/// removed.
pub async fn gc(
    older_than: Duration,
    repo: Option<(String, String)>,
    access: &NodeAccess,
) -> Result<Vec<String>, LaunchError> {
    let docker = node::connect_manager().await?;
    let local_node = node::local_node_id(&docker).await?;
    let now = SystemTime::now();
    let mut removed = Vec::new();
    let filter = match &repo {
        Some((owner, name)) => plan::repo_filter(owner, name),
        None => plan::all_builds_filter(),
    };
    reap_sidecars(&docker, &local_node, access).await;
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

/// Removes the sidecars of finished builds on every node that is up,
/// through each node's own daemon (sidecars are plain containers beside
/// their build, unknown to the swarm). A node that cannot be reached is
/// logged and skipped: the next `gc` tries again.
async fn reap_sidecars(docker: &Docker, local_node: &str, access: &NodeAccess) {
    let nodes = match docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
    {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!("listing the swarm's nodes for sidecars: {e}");
            Vec::new()
        }
    };
    let mut ids: Vec<String> = nodes
        .into_iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY)
        })
        .filter_map(|n| n.id)
        .collect();
    if !ids.iter().any(|id| id == local_node) {
        ids.push(local_node.to_string());
    }
    for id in ids {
        let node_docker = match node_daemon(docker, local_node, &id, access).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("sidecars on node {id} not reaped: {e}");
                continue;
            }
        };
        let reaped = sidecar::reap(&node_docker).await;
        if reaped > 0 {
            tracing::info!("removed {reaped} sidecar container(s) of finished builds on node {id}");
        }
    }
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
        // Nothing runs on a node that went down (and its daemon would not
        // answer).
        if let Ok(node) = docker.inspect_node(&node_id).await {
            if watch::node_seen(&node) == watch::NodeSeen::Down {
                continue;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RawFacts;

    fn options() -> SwarmOptions {
        let build = crate::facts::validate(
            &RawFacts::from_vars([
                ("FORGE_OWNER", "octo"),
                ("FORGE_REPO", "widget"),
                ("FORGE_PULL_REQUEST", "42"),
                ("FORGE_SHA", "0123456789abcdef0123456789abcdef01234567"),
                ("FORGE_BUILD_ID", "B1"),
            ]),
            crate::facts::Mode::Container,
            |_| false,
        )
        .unwrap();
        let exe = std::env::current_exe().unwrap();
        SwarmOptions {
            build,
            spec: SpecSource::Api,
            token: None,
            forgexec: Binaries::from_path(&exe).unwrap(),
            networks: Vec::new(),
            constraints: vec!["node.labels.forge.pool==ci".into()],
            resources: ResourcePolicy::default(),
            node_access: NodeAccess::default(),
            registry_auth: None,
            wait: true,
            retry_lost: 2,
            start_timeout: Duration::from_secs(1),
            labels: HashMap::new(),
            copy_slots: None,
        }
    }

    #[test]
    fn a_retry_is_a_new_service_kept_off_the_lost_nodes() {
        let opts = options();
        assert_eq!(retries_of(&opts), 0);
        let first = retry_options(&opts, "n1");
        assert_ne!(first.build.build_id, opts.build.build_id);
        assert_ne!(
            plan::build_name(&first.build),
            plan::build_name(&opts.build)
        );
        assert_eq!(first.build.sha, opts.build.sha);
        assert_eq!(first.build.pull_request, Some(42));
        assert_eq!(
            first.constraints,
            ["node.labels.forge.pool==ci", "node.id!=n1"]
        );
        assert_eq!(first.labels[plan::label::RETRY], "1");
        assert_eq!(retries_of(&first), 1);
        let second = retry_options(&first, "n2");
        assert_eq!(
            second.constraints,
            ["node.labels.forge.pool==ci", "node.id!=n1", "node.id!=n2"]
        );
        assert_eq!(second.labels[plan::label::RETRY], "2");
        // the same node lost again is not excluded twice
        let again = retry_options(&first, "n1");
        assert_eq!(again.constraints.len(), 2);
    }
}
