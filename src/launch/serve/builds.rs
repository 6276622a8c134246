//! Build tracking: a delivery's build goes through `forge-launch swarm`'s
//! launch path ([`swarm::launch`]); serve then follows the build's
//! container to its end and, when forgexec could not have reported (the
//! exit-code contract below), posts the final `error` status itself.
//! Closing a pull request removes its builds and reports them cancelled.
//! The swarm is the only state: every build service carries the delivery
//! and installation it came from as labels.
//!
//! How serve tells "forgexec reported" from "it didn't" (documented in
//! docs/launcher.md): forgexec, as the container's PID 1, ends with 0–3
//! (its verdicts, [`crate::exit`]) or 128 + N for a cancellation signal it
//! caught and reported (SIGTERM, SIGINT, SIGHUP, SIGQUIT). Anything else
//! (137: SIGKILL, which no process can catch; Docker's -1 for a container
//! it lost; an OOM kill) means the final status was never posted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use nix::sys::signal::Signal;

use super::final_status;
use super::webhook::{BuildRequest, Trigger};
use super::Serve;
use crate::exit;
use crate::facts::ActionName;
use crate::facts::{self, default_status_url, BuildContext, Mode, RawFacts};
use crate::launch::event::{self, FactFlags};
use crate::launch::forge::{CommitStatus, StatusState};
use crate::launch::swarm::{self, Outcome, Running, SpecSource, SwarmOptions};
use crate::launch::watch::{self, Ending};
use crate::launch::{node, plan, service, sidecar, LaunchError};
use crate::run::cancel::CANCEL_SIGNALS;

/// Labels serve adds to a build service.
pub mod label {
    /// `X-GitHub-Delivery` of the delivery that asked for the build.
    pub const DELIVERY: &str = "forge.delivery";
    /// The GitHub App installation (to mint a token for its statuses).
    pub const INSTALLATION: &str = "forge.installation";
}

/// Most delivery ids remembered in memory (the labels remember the rest).
const RECENT_DELIVERIES: usize = 10_000;

/// Delivery ids seen lately, oldest first out.
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    /// Forgets `id`: its launch failed, and a redelivery may try again.
    pub fn forget(&mut self, id: &str) {
        if self.seen.remove(id) {
            self.order.retain(|o| o != id);
        }
    }

    /// Records `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_DELIVERIES {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// Orders the work of one pull request (or of one repository's pushes,
/// which supersede each other too): deliveries are launched one at a time
/// in arrival order, and one overtaken by a newer delivery of the same
/// pull request before its turn is dropped, so the newest push always
/// creates the newest service (which the swarm launch keeps).
#[derive(Default)]
pub struct Lanes {
    next: std::sync::atomic::AtomicU64,
    lanes: std::sync::Mutex<HashMap<String, Lane>>,
}

/// The newest delivery of a lane, and the lock that takes turns.
struct Lane {
    latest: u64,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A place in a lane, taken when the delivery is accepted.
pub struct Ticket {
    serve: Arc<Serve>,
    key: String,
    seq: u64,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Lanes {
    /// The lane of a pull request's (or pushes') work.
    pub fn key(owner: &str, repo: &str, trigger: Option<&Trigger>) -> String {
        match trigger {
            Some(Trigger::Push { branch }) => format!("{owner}/{repo} push {branch}"),
            Some(Trigger::PullRequest { number }) => format!("{owner}/{repo}#{number}"),
            None => format!("{owner}/{repo}"),
        }
    }

    /// The lane of a build already launched, with serve's `labels` on its
    /// service (a push build's branch).
    pub fn key_of(build: &BuildContext, labels: &HashMap<String, String>) -> String {
        let trigger = match build.pull_request {
            Some(number) => Trigger::PullRequest { number },
            None => Trigger::Push {
                branch: labels.get(plan::label::BRANCH).cloned().unwrap_or_default(),
            },
        };
        Lanes::key(&build.owner, &build.repo, Some(&trigger))
    }

    pub fn enter(serve: &Arc<Serve>, key: String) -> Ticket {
        let lanes = serve.lanes.lanes.lock().unwrap_or_else(|p| p.into_inner());
        Lanes::enter_locked(serve, lanes, key)
    }

    /// A place in the lane only when no delivery is in it (one waiting
    /// for its launch is newer than any build already running).
    pub fn enter_if_idle(serve: &Arc<Serve>, key: String) -> Option<Ticket> {
        let lanes = serve.lanes.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.contains_key(&key) {
            return None;
        }
        Some(Lanes::enter_locked(serve, lanes, key))
    }

    fn enter_locked(
        serve: &Arc<Serve>,
        mut lanes: std::sync::MutexGuard<'_, HashMap<String, Lane>>,
        key: String,
    ) -> Ticket {
        let seq = serve
            .lanes
            .next
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let turn = match lanes.get_mut(&key) {
            Some(lane) => {
                lane.latest = seq;
                Arc::clone(&lane.turn)
            }
            None => {
                let turn = Arc::new(tokio::sync::Mutex::new(()));
                lanes.insert(
                    key.clone(),
                    Lane {
                        latest: seq,
                        turn: Arc::clone(&turn),
                    },
                );
                turn
            }
        };
        Ticket {
            serve: Arc::clone(serve),
            key,
            seq,
            turn,
        }
    }
}

impl Ticket {
    /// Waits for this delivery's turn; `None` when a newer delivery of the
    /// same lane came in meanwhile (this one is stale).
    pub async fn turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.turn.lock().await;
        self.is_latest().then_some(guard)
    }

    fn is_latest(&self) -> bool {
        let lanes = self
            .serve
            .lanes
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        lanes
            .get(&self.key)
            .is_some_and(|lane| lane.latest == self.seq)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // The newest delivery of a lane, done: the lane is idle.
        let mut lanes = self
            .serve
            .lanes
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if lanes
            .get(&self.key)
            .is_some_and(|lane| lane.latest == self.seq)
        {
            lanes.remove(&self.key);
        }
    }
}

/// Whether forgexec ended with the code of a cancellation it caught and
/// reported (128 + SIGTERM, SIGINT, SIGHUP or SIGQUIT).
pub fn is_cancellation(exit_code: i64) -> bool {
    CANCEL_SIGNALS
        .iter()
        .any(|s| i64::from(exit::cancelled(*s)) == exit_code)
}

/// The final status serve posts for a build container that ended, or
/// `None` when forgexec reported the build itself.
pub fn unreported_ending(
    exit_code: i64,
    oom_killed: bool,
    memory_limit: Option<i64>,
) -> Option<String> {
    if oom_killed && exit_code != 0 {
        return Some(match memory_limit {
            Some(bytes) => format!(
                "build container killed: out of memory (limit {} MiB)",
                bytes >> 20
            ),
            None => "build container killed: out of memory".to_string(),
        });
    }
    let reported =
        (0..=i64::from(exit::UNPOSTED)).contains(&exit_code) || is_cancellation(exit_code);
    if reported {
        return None;
    }
    Some(match exit_code {
        c if c > 128 && c < 128 + 65 => {
            let signal = Signal::try_from((c - 128) as i32)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {}", c - 128));
            format!("build container killed: {signal}")
        }
        c if c < 0 => "build container lost by Docker before it reported".to_string(),
        c => format!("build container ended with exit code {c} before it reported"),
    })
}

/// The facts of a delivery's build, with serve's configuration.
fn build_context(serve: &Serve, req: &BuildRequest) -> Result<BuildContext, LaunchError> {
    let opts = &serve.opts;
    let flags = FactFlags {
        action: Some(opts.action.clone()),
        api_url: Some(opts.api_url.clone()),
        artifacts_url: opts.artifacts_url.clone(),
        target_url: opts.target_url.clone(),
        insecure_http: FactFlags::insecure_http_from_env(),
        ..FactFlags::default()
    };
    let mut raw = flags.to_raw()?.or(req.raw.clone());
    if let Some(sha) = &raw.sha {
        raw.status_url = Some(default_status_url(
            &opts.api_url,
            &req.owner,
            &req.repo,
            sha,
        ));
    }
    let needs_pr = matches!(req.trigger, Trigger::PullRequest { .. });
    event::resolve(raw, &plan::new_build_id(), needs_pr)
}

/// Holds one launch in flight; SIGTERM waits for every guard to drop.
pub struct InFlight(Arc<Serve>);

impl InFlight {
    pub fn new(serve: &Arc<Serve>) -> InFlight {
        serve.inflight.send_modify(|n| *n += 1);
        InFlight(Arc::clone(serve))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Launches the build of an accepted delivery (counted in flight by the
/// caller's guard, taken before the task is spawned).
pub async fn launch(
    serve: Arc<Serve>,
    _inflight: InFlight,
    ticket: Ticket,
    req: BuildRequest,
    delivery: Option<String>,
    accepted: Instant,
) {
    let Some(_turn) = ticket.turn().await else {
        tracing::info!(
            "{}/{}: delivery {} overtaken by a newer one before its launch",
            req.owner,
            req.repo,
            delivery.as_deref().unwrap_or("-")
        );
        return;
    };
    let Ok(_slot) = serve.launch_slots.acquire().await else {
        return;
    };
    if let Err(err) = try_launch(&serve, &req, delivery.as_deref(), accepted).await {
        // A redelivery of a delivery that built nothing tries again.
        if let (Some(id), Ok(mut recent)) = (&delivery, serve.recent.lock()) {
            recent.forget(id);
        }
        tracing::warn!(
            "{}/{}: build not launched: {}",
            req.owner,
            req.repo,
            serve.renderer().error(&err)
        );
    }
}

async fn try_launch(
    serve: &Arc<Serve>,
    req: &BuildRequest,
    delivery: Option<&str>,
    accepted: Instant,
) -> Result<(), LaunchError> {
    let opts = &serve.opts;
    if req.fork && !opts.build_forks {
        tracing::info!(
            "{}/{}: pull request from a fork not built (--fork-prs skip)",
            req.owner,
            req.repo
        );
        return Ok(());
    }
    let docker = node::connect_manager().await?;
    if let Some(id) = delivery {
        let filter = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={id}", label::DELIVERY)],
        )]);
        if !service::list(&docker, filter).await?.is_empty() {
            tracing::info!("delivery {id} already has its build");
            return Ok(());
        }
    }
    let build = build_context(serve, req)?;
    let mut labels = HashMap::new();
    if let Some(id) = delivery {
        labels.insert(label::DELIVERY.to_string(), id.to_string());
    }
    if let Some(id) = req.install_id {
        labels.insert(label::INSTALLATION.to_string(), id.to_string());
    }
    if let Trigger::Push { branch } = &req.trigger {
        labels.insert(plan::label::BRANCH.to_string(), branch.clone());
    }
    let attempt = Attempt {
        build,
        install_id: req.install_id,
        labels,
        constraints: opts.constraints.clone(),
        retry: 0,
    };
    start(serve, docker, attempt, accepted).await
}

/// One launch of a build: the first, or a retry after its node was lost.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub build: BuildContext,
    pub install_id: Option<u64>,
    /// serve's labels on the service (the delivery, the installation, a
    /// push build's branch).
    pub labels: HashMap<String, String>,
    /// Where the swarm may place it: the operator's `--constraint`s and,
    /// on a retry, off the nodes lost before.
    pub constraints: Vec<String>,
    /// 0 for the first launch, else which retry.
    pub retry: u32,
}

/// Launches an attempt through `forge-launch swarm`'s path and follows it.
async fn start(
    serve: &Arc<Serve>,
    docker: Docker,
    attempt: Attempt,
    accepted: Instant,
) -> Result<(), LaunchError> {
    let opts = &serve.opts;
    let build = attempt.build.clone();
    let token = serve
        .credentials_for(attempt.install_id, &build.repo)
        .await
        .map_err(LaunchError::from)?;
    let mut labels = attempt.labels.clone();
    if attempt.retry > 0 {
        labels.insert(plan::label::RETRY.to_string(), attempt.retry.to_string());
    }
    let launch = SwarmOptions {
        build: build.clone(),
        spec: SpecSource::Api,
        token,
        forgexec: opts.forgexec.clone(),
        networks: opts.networks.clone(),
        constraints: attempt.constraints.clone(),
        resources: opts.resources,
        node_access: opts.node_access.clone(),
        wait: false,
        // A node lost while the launch waits for it: launched again at
        // once (a loss mid-build is the watch's).
        retry_lost: opts.retry_lost,
        start_timeout: opts.start_timeout,
        labels,
        copy_slots: Some(Arc::clone(&serve.copy_slots)),
        registry_auth: opts.registry_auth.clone(),
    };
    let queued = tokio::spawn(report_queued(Arc::clone(serve), build.clone()));
    let (last, outcome) = swarm::launch_attempts(launch).await;
    queued.abort();
    let attempt = Attempt {
        build: last.build.clone(),
        retry: swarm::retries_of(&last),
        constraints: last.constraints,
        ..attempt
    };
    match outcome {
        Ok(Outcome::Started { service, running }) => {
            serve.metrics.builds_launched.inc();
            serve
                .metrics
                .launch_seconds
                .observe(accepted.elapsed().as_secs_f64());
            tracing::info!("{service}: started for {}", attempt.build.sha);
            let watched = Watched { attempt, running };
            tokio::spawn(watch(Arc::clone(serve), docker, watched));
            Ok(())
        }
        Ok(Outcome::Superseded { service }) => {
            tracing::info!("{service}: superseded by a newer build");
            Ok(())
        }
        Ok(Outcome::Finished { .. }) => Ok(()),
        Err(err) => {
            // swarm::launch posted the `error` status.
            serve.metrics.statuses_posted.inc();
            serve.metrics.finished("error");
            Err(err)
        }
    }
}

/// After a few seconds without a container, says on the pull request that
/// the build waits for a node with the resources it asks for.
async fn report_queued(serve: Arc<Serve>, build: BuildContext) {
    tokio::time::sleep(serve.opts.queued_after).await;
    let Ok(docker) = node::connect_manager().await else {
        return;
    };
    let filter = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={}", plan::label::BUILD_ID, build.build_id)],
    )]);
    let Ok(services) = service::list(&docker, filter).await else {
        return;
    };
    let Some(svc) = services.first() else { return };
    let filters = HashMap::from([("service".to_string(), vec![svc.id.clone()])]);
    let Ok(tasks) = docker
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(filters),
        }))
        .await
    else {
        return;
    };
    let Some(pending) = tasks.iter().find(|t| {
        matches!(
            t.status.as_ref().and_then(|s| s.state),
            Some(bollard::models::TaskState::PENDING)
        )
    }) else {
        return;
    };
    serve.metrics.builds_queued.inc();
    // What this build reserves (its `resources:` or the operator's rule).
    let reserved = pending
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations.as_ref());
    let limits = service::Limits {
        nano_cpus: reserved.and_then(|r| r.nano_cpus),
        memory_bytes: reserved.and_then(|r| r.memory_bytes),
        ..service::Limits::default()
    };
    let mut wants = Vec::new();
    if let Some(n) = limits.nano_cpus {
        wants.push(format!("{} CPUs", n as f64 / 1e9));
    }
    if let Some(m) = limits.memory_bytes {
        wants.push(format!("{} MiB memory", m >> 20));
    }
    let text = if wants.is_empty() {
        "queued: waiting for a node".to_string()
    } else {
        format!("queued: waiting for a node with {}", wants.join(" / "))
    };
    let install = build.install_id;
    serve
        .post(&build, install, StatusState::Pending, &text)
        .await;
    // The gauge counts builds waiting now: until the launch goes on.
    struct Dequeue(Arc<Serve>);
    impl Drop for Dequeue {
        fn drop(&mut self) {
            self.0.metrics.builds_queued.dec();
        }
    }
    let _dequeue = Dequeue(Arc::clone(&serve));
    std::future::pending::<()>().await;
}

/// A started build serve follows.
#[derive(Debug, Clone)]
pub struct Watched {
    pub attempt: Attempt,
    pub running: Running,
}

/// Waits for the build's container to end and posts the final status when
/// forgexec could not; a build lost with its node is launched again
/// (`--retry-lost`).
pub fn watch(
    serve: Arc<Serve>,
    manager: Docker,
    watched: Watched,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    // Boxed: a retry's launch spawns the watch of the retry.
    Box::pin(follow_build(serve, manager, watched))
}

async fn follow_build(serve: Arc<Serve>, manager: Docker, watched: Watched) {
    serve.metrics.builds_running.inc();
    let ending = ending(&serve, &manager, &watched.running).await;
    serve.metrics.builds_running.dec();
    let build = &watched.attempt.build;
    let name = plan::build_name(build);
    let (text, exit_code) = match ending {
        Ok(Ending::Exited {
            code,
            oom_killed,
            memory_limit,
        }) => (unreported_ending(code, oom_killed, memory_limit), code),
        Ok(Ending::Removed) => (
            Some("build container removed before it reported".to_string()),
            -1,
        ),
        Ok(Ending::NodeLost { node, node_id }) => {
            lost(&serve, &manager, watched, &node, &node_id).await;
            return;
        }
        Err(err) => {
            tracing::warn!(
                "{name}: lost track of the build: {}",
                serve.renderer().error(&err)
            );
            return;
        }
    };
    // Its sidecars go with it, not at the next gc (within a bound: its
    // node may be failing).
    let removal = remove_sidecars(&serve, &manager, &watched.running.node_id, &name);
    if tokio::time::timeout(swarm::SIDECAR_REMOVAL, removal)
        .await
        .is_err()
    {
        tracing::warn!("{name}: sidecars left for gc: the node did not answer");
    }
    match text {
        None => {
            tracing::info!("{name}: forgexec reported the build");
            serve.metrics.finished("reported");
            final_status::ensure(&serve, &manager, &watched, exit_code).await;
        }
        Some(text) => {
            tracing::warn!("{name}: {text}");
            serve.metrics.finished("error");
            serve
                .post(build, watched.attempt.install_id, StatusState::Error, &text)
                .await;
        }
    }
}

/// How the build's container ended, or that its node went down.
async fn ending(serve: &Serve, manager: &Docker, running: &Running) -> Result<Ending, LaunchError> {
    let local_node = node::local_node_id(manager).await?;
    watch::to_end(
        &serve.nodes,
        manager,
        &local_node,
        running,
        &serve.opts.node_access,
        false,
    )
    .await
}

/// A build whose node went down: launched again off that node while
/// retries are left, else ended with `error` "node NAME went down during
/// the build". Only the last attempt's loss is final: a retry's `pending`
/// says which node went down, and its own final status is the build's.
async fn lost(serve: &Arc<Serve>, manager: &Docker, watched: Watched, node: &str, node_id: &str) {
    let attempt = watched.attempt;
    let name = plan::build_name(&attempt.build);
    serve.metrics.finished("lost");
    // A newer build of the pull request replaced it meanwhile: that one
    // reports.
    if let Ok(false) = service::exists(manager, &watched.running.service_id).await {
        tracing::info!("{name}: lost with node {node}, already replaced by a newer build");
        return;
    }
    if attempt.retry < serve.opts.retry_lost {
        // A delivery of the same pull request waiting for its launch is
        // newer than this build and replaces it; else the retry takes the
        // lane, so a delivery that comes now waits for it. The retry's
        // launch removes the lost service (as any newer launch does), so a
        // serve restarted meanwhile still finds the build.
        let ticket = Lanes::enter_if_idle(serve, Lanes::key_of(&attempt.build, &attempt.labels));
        let turn = match &ticket {
            Some(ticket) => ticket.turn().await,
            None => None,
        };
        if let Some(_turn) = turn {
            retry(serve, attempt, node, node_id).await;
            return;
        }
        tracing::info!("{name}: lost with node {node}; a newer delivery replaces it");
    }
    // Nothing of it runs anywhere: its service goes now, not at gc.
    if let Err(err) = service::remove(manager, &watched.running.service_id).await {
        tracing::warn!("{name}: {}", serve.renderer().error(&err));
    }
    serve.metrics.finished("error");
    serve
        .post(
            &attempt.build,
            attempt.install_id,
            StatusState::Error,
            &watch::lost_text(node),
        )
        .await;
}

/// Launches the next attempt of a lost build, off the lost node, after
/// posting its `pending` "retry N of M after node NAME went down".
/// The caller holds the lane's turn.
async fn retry(serve: &Arc<Serve>, lost: Attempt, node: &str, node_id: &str) {
    let _inflight = InFlight::new(serve);
    let accepted = Instant::now();
    let Ok(_slot) = serve.launch_slots.acquire().await else {
        return;
    };
    let number = lost.retry + 1;
    let name = plan::build_name(&lost.build);
    let text = watch::retry_text(number, serve.opts.retry_lost, node);
    tracing::warn!("{name}: {text}");
    serve
        .post(&lost.build, lost.install_id, StatusState::Pending, &text)
        .await;
    let mut attempt = lost;
    attempt.retry = number;
    attempt.build.build_id = plan::new_build_id();
    let avoid = watch::avoid_constraint(node_id);
    if !attempt.constraints.contains(&avoid) {
        attempt.constraints.push(avoid);
    }
    let result = match node::connect_manager().await {
        Ok(docker) => start(serve, docker, attempt, accepted).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::warn!(
            "{name}: retry not launched: {}",
            serve.renderer().error(&err)
        );
    }
}

/// Removes the sidecars of build `name` from node `node_id` (where the
/// launch started them); failures are logged, `gc` reaps what is left.
async fn remove_sidecars(serve: &Serve, manager: &Docker, node_id: &str, name: &str) {
    let local_node = match node::local_node_id(manager).await {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(
                "{name}: sidecars left for gc: {}",
                serve.renderer().error(&err)
            );
            return;
        }
    };
    match swarm::node_daemon(manager, &local_node, node_id, &serve.opts.node_access).await {
        Ok(node_docker) => sidecar::remove(&node_docker, name).await,
        Err(err) => tracing::warn!(
            "{name}: sidecars left for gc: {}",
            serve.renderer().error(&err)
        ),
    }
}

/// Cancels the running builds of a closed pull request: removes their
/// services, waits for the containers to stop (forgexec reports its
/// cancellation first), then posts `error` "cancelled: pull request
/// closed" as the final word.
pub async fn close(
    serve: Arc<Serve>,
    _inflight: InFlight,
    ticket: Ticket,
    owner: String,
    repo: String,
    number: u64,
    install: Option<u64>,
) {
    // After the launches of this pull request that came before.
    let _turn = ticket.turn.lock().await;
    if let Err(err) = try_close(&serve, &owner, &repo, number, install).await {
        tracing::warn!(
            "{owner}/{repo}#{number}: builds not cancelled: {}",
            serve.renderer().error(&err)
        );
    }
}

async fn try_close(
    serve: &Arc<Serve>,
    owner: &str,
    repo: &str,
    number: u64,
    install: Option<u64>,
) -> Result<(), LaunchError> {
    let docker = node::connect_manager().await?;
    let local_node = node::local_node_id(&docker).await?;
    let services = service::list(&docker, plan::pull_request_filter(owner, repo, number)).await?;
    for svc in services {
        let containers = containers_of(&docker, &local_node, &svc.id, serve).await;
        let running = {
            let mut any = false;
            for (node_docker, id) in &containers {
                if let Ok(c) = node_docker.inspect_container(id, None).await {
                    any |= c.state.and_then(|s| s.running).unwrap_or(false);
                }
            }
            any
        };
        service::remove(&docker, &svc.id).await?;
        // Its sidecars are on its containers' nodes.
        for (node_docker, _) in &containers {
            sidecar::remove(node_docker, &svc.name).await;
        }
        if !running {
            continue;
        }
        tracing::info!("{}: cancelled (pull request closed)", svc.name);
        let bound =
            Duration::from_nanos(service::STOP_GRACE_PERIOD_NANOS as u64) + Duration::from_secs(15);
        for (node_docker, id) in &containers {
            let _ = tokio::time::timeout(bound, wait_gone(node_docker, id)).await;
        }
        let (Some(sha), Some(action)) = (
            svc.labels.get(plan::label::SHA),
            svc.labels
                .get(plan::label::ACTION)
                .and_then(|a| a.parse::<ActionName>().ok()),
        ) else {
            continue;
        };
        let url = default_status_url(&serve.opts.api_url, owner, repo, sha);
        let status = CommitStatus::new(
            StatusState::Error,
            action.status_context(),
            "cancelled: pull request closed",
            serve.opts.target_url.clone(),
        );
        serve.post_to(&url, &status, install, repo).await;
    }
    Ok(())
}

/// The containers of a service's tasks, each with its node's daemon.
async fn containers_of(
    docker: &Docker,
    local_node: &str,
    service_id: &str,
    serve: &Serve,
) -> Vec<(Docker, String)> {
    let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
    let Ok(tasks) = docker
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(filters),
        }))
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks {
        let Some(container) = task
            .status
            .and_then(|s| s.container_status)
            .and_then(|c| c.container_id)
        else {
            continue;
        };
        let node_id = task.node_id.unwrap_or_default();
        if let Ok(d) =
            swarm::node_daemon(docker, local_node, &node_id, &serve.opts.node_access).await
        {
            out.push((d, container));
        }
    }
    out
}

/// After a restart: the builds serve launched (services with a delivery
/// label, for the same forge API) are followed again. One whose container was never started is
/// launched on; a running one is watched to its end.
pub async fn pick_up(serve: Arc<Serve>) {
    if let Err(err) = try_pick_up(&serve).await {
        tracing::warn!(
            "could not pick up earlier builds: {}",
            serve.renderer().error(&err)
        );
    }
}

async fn try_pick_up(serve: &Arc<Serve>) -> Result<(), LaunchError> {
    let docker = node::connect_manager().await?;
    let local_node = node::local_node_id(&docker).await?;
    let filter = HashMap::from([("label".to_string(), vec![label::DELIVERY.to_string()])]);
    for svc in service::list(&docker, filter).await? {
        let Ok(inspect) = docker.inspect_service(&svc.id, None).await else {
            continue;
        };
        let template = inspect.spec.and_then(|s| s.task_template);
        let constraints = template
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default();
        let env = template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.env)
            .unwrap_or_default();
        let raw = RawFacts::from_vars(env.iter().filter_map(|e| e.split_once('=')));
        let Ok(build) = facts::validate(&raw, Mode::Container, |_| false) else {
            continue;
        };
        // Only the builds of this serve's forge (other launchers may share
        // the swarm).
        if build.api_url.trim_end_matches('/') != serve.opts.api_url.trim_end_matches('/') {
            continue;
        }
        let attempt = Attempt {
            build,
            install_id: svc
                .labels
                .get(label::INSTALLATION)
                .and_then(|i| i.parse().ok()),
            labels: svc
                .labels
                .iter()
                .filter(|(k, _)| {
                    [label::DELIVERY, label::INSTALLATION, plan::label::BRANCH]
                        .contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            constraints,
            retry: svc
                .labels
                .get(plan::label::RETRY)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
        };
        // A node that went down while serve was away cannot say whether
        // its build ran or ended: neither followed nor launched again
        // (its daemon would not answer; a finished build must not run
        // twice).
        if let Some(running) = running_of(&docker, &svc.id).await {
            if let Ok(node) = docker.inspect_node(&running.node_id).await {
                if watch::node_seen(&node) == watch::NodeSeen::Down {
                    tracing::warn!(
                        "{}: its node {} is down; not followed (gc removes the service)",
                        svc.name,
                        watch::node_name(&node, &running.node_id)
                    );
                    continue;
                }
            }
        }
        let containers = containers_of(&docker, &local_node, &svc.id, serve).await;
        let mut state = None;
        for (node_docker, id) in &containers {
            if let Ok(c) = node_docker.inspect_container(id, None).await {
                state = c.state.and_then(|s| s.status);
            }
        }
        use bollard::models::ContainerStateStatusEnum as S;
        match state {
            Some(S::RUNNING) => {
                let Some(running) = running_of(&docker, &svc.id).await else {
                    continue;
                };
                tracing::info!("{}: following the running build again", svc.name);
                let watched = Watched { attempt, running };
                tokio::spawn(watch(Arc::clone(serve), docker.clone(), watched));
            }
            None | Some(S::CREATED) => {
                tracing::info!("{}: finishing its launch", svc.name);
                tokio::spawn(resume(Arc::clone(serve), attempt, svc.id, svc.name));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The service's task's node and container.
async fn running_of(docker: &Docker, service_id: &str) -> Option<Running> {
    let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
    let tasks = docker
        .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .ok()?;
    let task = tasks
        .into_iter()
        .max_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0))?;
    Some(Running {
        service_id: service_id.to_string(),
        node_id: task.node_id?,
        container_id: task.status?.container_status?.container_id?,
    })
}

/// Finishes launching a build service found not started.
async fn resume(serve: Arc<Serve>, attempt: Attempt, service_id: String, name: String) {
    let _inflight = InFlight::new(&serve);
    let started = Instant::now();
    let build = attempt.build.clone();
    let token = match serve.credentials_for(attempt.install_id, &build.repo).await {
        Ok(token) => token,
        Err(err) => {
            tracing::warn!("{name}: no credential to finish the launch: {err}");
            return;
        }
    };
    let opts = &serve.opts;
    let launch = SwarmOptions {
        build: build.clone(),
        spec: SpecSource::Api,
        token,
        forgexec: opts.forgexec.clone(),
        networks: opts.networks.clone(),
        constraints: attempt.constraints.clone(),
        resources: opts.resources,
        node_access: opts.node_access.clone(),
        wait: false,
        retry_lost: 0,
        start_timeout: opts.start_timeout,
        labels: HashMap::new(),
        copy_slots: Some(Arc::clone(&serve.copy_slots)),
        registry_auth: opts.registry_auth.clone(),
    };
    match swarm::resume(&launch, &service_id, &name).await {
        Ok(Outcome::Started { running, .. }) => {
            serve.metrics.builds_launched.inc();
            serve
                .metrics
                .launch_seconds
                .observe(started.elapsed().as_secs_f64());
            let Ok(docker) = node::connect_manager().await else {
                return;
            };
            let watched = Watched { attempt, running };
            tokio::spawn(watch(Arc::clone(&serve), docker, watched));
        }
        Ok(_) => {}
        Err(err) => {
            serve.metrics.finished("error");
            tracing::warn!(
                "{name}: launch not finished: {}",
                serve.renderer().error(&err)
            );
        }
    }
}

/// Until the container no longer runs (or no longer exists).
async fn wait_gone(docker: &Docker, container: &str) {
    loop {
        match docker.inspect_container(container, None).await {
            Ok(c) if c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgexecs_own_exit_codes_mean_it_reported() {
        for code in [0, 1, 2, 3, 143, 130, 129, 131] {
            assert_eq!(unreported_ending(code, false, None), None, "exit {code}");
        }
        assert_eq!(
            unreported_ending(137, false, None).unwrap(),
            "build container killed: SIGKILL"
        );
        assert_eq!(
            unreported_ending(137, true, Some(512 << 20)).unwrap(),
            "build container killed: out of memory (limit 512 MiB)"
        );
        // a command was OOM-killed but the build still passed
        assert_eq!(unreported_ending(0, true, Some(512 << 20)), None);
        assert!(unreported_ending(-1, false, None)
            .unwrap()
            .contains("lost by Docker"));
        assert!(unreported_ending(42, false, None)
            .unwrap()
            .contains("exit code 42"));
    }

    fn serve() -> Arc<Serve> {
        let opts = super::super::ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            credentials: super::super::app::Credentials::None,
            push: Default::default(),
            build_forks: true,
            action: "execute".into(),
            api_url: "http://127.0.0.1:1".into(),
            artifacts_url: None,
            target_url: None,
            forgexec: crate::launch::binary::Binaries::from_path(&std::env::current_exe().unwrap())
                .unwrap(),
            networks: Vec::new(),
            constraints: Vec::new(),
            resources: Default::default(),
            node_access: Default::default(),
            registry_auth: None,
            start_timeout: Duration::from_secs(1),
            retry_lost: 1,
            retention: Duration::from_secs(1),
            gc_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            queued_after: Duration::from_secs(1),
            max_launches: 1,
        };
        Arc::new(Serve::new(opts, &crate::secret::Secret::new("s")).unwrap())
    }

    fn build(extra: &[(&str, &str)]) -> BuildContext {
        let mut vars = vec![
            ("FORGE_OWNER", "octo"),
            ("FORGE_REPO", "widget"),
            ("FORGE_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("FORGE_BUILD_ID", "B1"),
        ];
        vars.extend_from_slice(extra);
        facts::validate(&RawFacts::from_vars(vars), Mode::Container, |_| false).unwrap()
    }

    #[test]
    fn a_lost_build_is_retried_in_its_lane_only_when_no_newer_delivery_waits() {
        let serve = serve();
        let pr = build(&[("FORGE_PULL_REQUEST", "7")]);
        let key = Lanes::key_of(&pr, &HashMap::new());
        assert_eq!(
            key,
            Lanes::key("octo", "widget", Some(&Trigger::PullRequest { number: 7 }))
        );
        // A push build's lane is its branch's.
        let push = build(&[]);
        let labels = HashMap::from([(plan::label::BRANCH.to_string(), "main".to_string())]);
        assert_eq!(
            Lanes::key_of(&push, &labels),
            Lanes::key(
                "octo",
                "widget",
                Some(&Trigger::Push {
                    branch: "main".into()
                })
            )
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A delivery of the pull request waits for its launch: it is newer
        // than the lost build, which is not retried.
        let waiting = Lanes::enter(&serve, key.clone());
        assert!(Lanes::enter_if_idle(&serve, key.clone()).is_none());
        drop(waiting);
        // An idle lane: the retry takes it, and has its turn.
        let retry = Lanes::enter_if_idle(&serve, key.clone()).expect("an idle lane");
        runtime.block_on(async {
            assert!(retry.turn().await.is_some());
        });
        // A delivery that came in between the two: it replaces the build.
        let newer = Lanes::enter(&serve, key.clone());
        runtime.block_on(async {
            assert!(retry.turn().await.is_none());
            assert!(newer.turn().await.is_some());
        });
    }

    #[test]
    fn recent_deliveries_are_bounded() {
        let mut recent = Recent::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        for i in 0..RECENT_DELIVERIES {
            recent.insert(&i.to_string());
        }
        assert!(recent.insert("a"), "the oldest id was forgotten");
        recent.forget("a");
        assert!(recent.insert("a"), "a forgotten id is new again");
        assert!(recent.order.len() <= RECENT_DELIVERIES);
    }
}
