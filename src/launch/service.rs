//! Swarm service operations: the service spec of a build, listing and
//! removing the services of a pull request, creating one, waiting (fast
//! polling with a deadline) until its task's container exists, and garbage
//! collection of finished build services.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit,
    NetworkAttachmentConfig, Platform, ResourceObject, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions};
use bollard::Docker;

use super::error::{docker_message, is_not_found};
use super::{watch, LaunchError};
use crate::spec::{PortMapping, Resources};

/// Time a removed or stopped build gets between SIGTERM and SIGKILL: room
/// for forgexec's own grace period (FORGE_GRACE, 10 s by default) plus the
/// uploads and the final status of a cancelled build. Docker's default
/// (10 s) would kill it before it reports.
pub const STOP_GRACE_PERIOD_NANOS: i64 = 60 * 1_000_000_000;

/// The command of every build container.
pub const COMMAND: &str = "/forgexec";

/// Resource limits of the build container (`--cpus`, `--memory`, `--pids`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// The CPUs and memory are also reserved: the swarm places the task
    /// only on a node that has them free, and keeps it pending until one
    /// has (serve's queue).
    pub reserve: bool,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.nano_cpus.is_none() && self.memory_bytes.is_none() && self.pids.is_none()
    }
}

/// The operator's rule for what a build gets, per resource: the
/// `.forge.yml`'s `resources:` request, else the operator's default
/// (`--cpus`, `--memory`, `--pids`), else the operator's maximum
/// (`--max-cpus`, `--max-memory`, `--max-pids`), else nothing. A request
/// above the maximum is refused: a pull request cannot ask for the whole
/// node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourcePolicy {
    pub defaults: Limits,
    pub maxima: Limits,
    /// Whether CPUs and memory are also reserved (swarm builds; a local
    /// container has nothing to reserve against).
    pub reserve: bool,
}

impl ResourcePolicy {
    /// The limits of a build that asks for `asked`.
    pub fn resolve(&self, asked: &Resources) -> Result<Limits, LaunchError> {
        let pick = |what: &'static str,
                    flag: &'static str,
                    asked: Option<u64>,
                    default: Option<i64>,
                    max: Option<i64>,
                    show: fn(i64) -> String|
         -> Result<Option<i64>, LaunchError> {
            let Some(asked) = asked else {
                return Ok(default.or(max));
            };
            let asked = i64::try_from(asked).unwrap_or(i64::MAX);
            match max {
                Some(max) if asked > max => Err(LaunchError::OverLimit {
                    what,
                    asked: show(asked),
                    flag,
                    max: show(max),
                }),
                _ => Ok(Some(asked)),
            }
        };
        Ok(Limits {
            nano_cpus: pick(
                "cpus",
                "--max-cpus",
                asked.nano_cpus,
                self.defaults.nano_cpus,
                self.maxima.nano_cpus,
                show_cpus,
            )?,
            memory_bytes: pick(
                "memory",
                "--max-memory",
                asked.memory_bytes,
                self.defaults.memory_bytes,
                self.maxima.memory_bytes,
                show_bytes,
            )?,
            pids: pick(
                "pids",
                "--max-pids",
                asked.pids,
                self.defaults.pids,
                self.maxima.pids,
                |n| n.to_string(),
            )?,
            reserve: self.reserve,
        })
    }
}

/// CPUs from billionths, as written in a `.forge.yml` (`1.5`).
pub fn show_cpus(nanos: i64) -> String {
    (nanos as f64 / 1e9).to_string()
}

/// Bytes in the largest binary unit that divides them (`2GiB`).
pub fn show_bytes(bytes: i64) -> String {
    crate::facts::format_size(u64::try_from(bytes).unwrap_or(0))
}

/// Everything that goes into a build service.
#[derive(Debug, Clone, Default)]
pub struct ServiceRequest {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub networks: Vec<String>,
    pub ports: Vec<PortMapping>,
    pub limits: Limits,
    /// Where the swarm may place the task (`Placement.Platforms`): the
    /// architectures with a forgexec binary ([`super::binary`]).
    pub platforms: Vec<Platform>,
    /// Extra `/etc/hosts` entries (`IP NAME`): the sidecars' names.
    pub hosts: Vec<String>,
    /// The operator's placement constraints (`--constraint`), e.g.
    /// `node.labels.forge.pool==ci`.
    pub constraints: Vec<String>,
}

/// The swarm service spec: one replica, command `/forgexec`, never
/// restarted. Holds no credential: the token travels in the archive.
pub fn service_spec(req: &ServiceRequest) -> ServiceSpec {
    let networks: Vec<NetworkAttachmentConfig> = req
        .networks
        .iter()
        .map(|n| NetworkAttachmentConfig {
            target: Some(n.clone()),
            ..Default::default()
        })
        .collect();
    let resources = (!req.limits.is_empty()).then(|| TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: req.limits.nano_cpus,
            memory_bytes: req.limits.memory_bytes,
            pids: req.limits.pids,
        }),
        reservations: req.limits.reserve.then(|| ResourceObject {
            nano_cpus: req.limits.nano_cpus,
            memory_bytes: req.limits.memory_bytes,
            ..Default::default()
        }),
        ..Default::default()
    });
    let endpoint_spec = (!req.ports.is_empty()).then(|| EndpointSpec {
        ports: Some(
            req.ports
                .iter()
                .map(|p| EndpointPortConfig {
                    target_port: Some(i64::from(p.target)),
                    published_port: Some(i64::from(p.published)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    });
    ServiceSpec {
        name: Some(req.name.clone()),
        labels: Some(req.labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(req.image.clone()),
                command: Some(vec![COMMAND.to_string()]),
                env: Some(req.env.clone()),
                labels: Some(req.labels.clone()),
                stop_grace_period: Some(STOP_GRACE_PERIOD_NANOS),
                hosts: (!req.hosts.is_empty()).then(|| req.hosts.clone()),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            resources,
            placement: (!req.platforms.is_empty() || !req.constraints.is_empty()).then(|| {
                TaskSpecPlacement {
                    platforms: (!req.platforms.is_empty()).then(|| req.platforms.clone()),
                    constraints: (!req.constraints.is_empty()).then(|| req.constraints.clone()),
                    ..Default::default()
                }
            }),
            networks: (!networks.is_empty()).then_some(networks),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec,
        ..Default::default()
    }
}

/// A build service as listed: creation time, id, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub created_at: String,
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// Services matching a label filter.
pub async fn list(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<Vec<Listed>, LaunchError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| LaunchError::docker("listing services", e))?;
    Ok(services
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec.unwrap_or_default();
            Some(Listed {
                created_at: s.created_at.unwrap_or_default(),
                id: s.id?,
                name: spec.name.unwrap_or_default(),
                labels: spec.labels.unwrap_or_default(),
            })
        })
        .collect())
}

/// Removes a service (and so its containers); `false` when it was already
/// gone.
pub async fn remove(docker: &Docker, id: &str) -> Result<bool, LaunchError> {
    match docker.delete_service(id).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(LaunchError::docker(format!("removing service {id}"), e)),
    }
}

/// Creates the service; returns its id.
/// `credentials` go in the `X-Registry-Auth` header: the swarm hands them
/// to the node that pulls the image.
pub async fn create(
    docker: &Docker,
    spec: ServiceSpec,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> Result<String, LaunchError> {
    let name = spec.name.clone().unwrap_or_default();
    let created = docker
        .create_service(spec, credentials)
        .await
        .map_err(|e| LaunchError::docker(format!("creating service {name}"), e))?;
    for warning in created.warnings.unwrap_or_default() {
        tracing::debug!("service {name}: {warning}");
    }
    created.id.ok_or_else(|| LaunchError::Docker {
        action: format!("creating service {name}"),
        message: "the daemon returned no service id".into(),
    })
}

/// Where a build task's container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub task_id: String,
    pub node_id: String,
    pub container_id: String,
}

/// What one look at a task says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskProgress {
    /// Still being scheduled, pulled or prepared; the text says where.
    Waiting(String),
    /// The container exists (the task is starting, or its start failed for
    /// lack of `/forgexec`): ready for the archive.
    Ready(Placed),
    /// The task failed for another reason (Docker's error).
    Failed(String),
    /// The container started by itself: the image has its own `/forgexec`.
    RanItself(String),
    /// The task is being shut down (the service was removed or replaced).
    Gone,
}

/// Whether Docker's task error is the expected missing `/forgexec`.
pub fn is_missing_forgexec(err: &str) -> bool {
    err.contains(COMMAND)
        && (err.contains("no such file or directory") || err.contains("not found"))
}

/// Classifies a task as listed by the swarm.
pub fn classify(task: &Task) -> TaskProgress {
    let status = task.status.clone().unwrap_or_default();
    let state = status.state.unwrap_or(TaskState::NEW);
    let err = status.err.clone().unwrap_or_default();
    if matches!(
        task.desired_state,
        Some(TaskState::SHUTDOWN | TaskState::REMOVE)
    ) && !matches!(state, TaskState::FAILED | TaskState::REJECTED)
    {
        return TaskProgress::Gone;
    }
    match state {
        TaskState::FAILED | TaskState::REJECTED => {
            let container = status.container_status.and_then(|c| c.container_id);
            match (container, task.node_id.clone(), task.id.clone()) {
                (Some(container_id), Some(node_id), Some(task_id)) if is_missing_forgexec(&err) => {
                    TaskProgress::Ready(Placed {
                        task_id,
                        node_id,
                        container_id,
                    })
                }
                _ if err.is_empty() => {
                    TaskProgress::Failed(status.message.unwrap_or_else(|| state.to_string()))
                }
                _ => TaskProgress::Failed(err),
            }
        }
        // The container exists once the task is starting: copying forgexec
        // in now (before or after the swarm's own start attempt fails)
        // saves the agent's report of the failure. Either start wins; the
        // other is a no-op.
        TaskState::READY | TaskState::STARTING => {
            match (
                status.container_status.and_then(|c| c.container_id),
                task.node_id.clone(),
                task.id.clone(),
            ) {
                (Some(container_id), Some(node_id), Some(task_id)) => TaskProgress::Ready(Placed {
                    task_id,
                    node_id,
                    container_id,
                }),
                _ => TaskProgress::Waiting(state.to_string()),
            }
        }
        TaskState::RUNNING | TaskState::COMPLETE => TaskProgress::RanItself(state.to_string()),
        TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::ORPHANED => TaskProgress::Gone,
        _ => {
            let mut text = state.to_string();
            if let Some(msg) = status.message.filter(|m| !m.is_empty()) {
                text = format!("{text} ({msg})");
            }
            if !err.is_empty() {
                text = format!("{text}: {err}");
            }
            TaskProgress::Waiting(text)
        }
    }
}

/// Longest pause between two looks at the task. The container shows up
/// 0.5 to 1 s after the service is created, and the look that finds it
/// can come up to one pause late, which delays the build's start (at the
/// former 200 ms, by up to 200 ms); at 50 ms a launch asks the manager
/// about 20 times, a few milliseconds each.
const POLL_CAP: Duration = Duration::from_millis(50);

/// Outcome of waiting for a service's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    Ready(Placed),
    /// The service disappeared (a newer launch removed it).
    Gone,
}

/// Polls the service's task (10 ms, doubling to [`POLL_CAP`]) until its
/// container exists and failed to start for lack of `/forgexec`, or
/// `timeout` passes.
pub async fn wait_for_container(
    docker: &Docker,
    service_id: &str,
    service_name: &str,
    timeout: Duration,
) -> Result<Wait, LaunchError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    let mut last = String::from("no task yet");
    let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
    loop {
        let tasks = match docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters.clone()),
            }))
            .await
        {
            Ok(tasks) => tasks,
            // the filter names a service that no longer exists
            Err(e) if is_not_found(&e) => return Ok(Wait::Gone),
            Err(e) => {
                return Err(LaunchError::docker(
                    format!("listing tasks of {service_name}"),
                    e,
                ))
            }
        };
        if tasks.is_empty() {
            match docker.inspect_service(service_id, None).await {
                Err(e) if is_not_found(&e) => return Ok(Wait::Gone),
                Err(e) => {
                    return Err(LaunchError::docker(
                        format!("inspecting service {service_name}"),
                        e,
                    ))
                }
                Ok(_) => {}
            }
        }
        // One replica, never restarted: the newest task is the build's.
        let newest = tasks
            .iter()
            .max_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0));
        if let Some(task) = newest {
            match classify(task) {
                TaskProgress::Ready(placed) => return Ok(Wait::Ready(placed)),
                TaskProgress::Gone => {
                    // The swarm shuts down the tasks of a node that went
                    // down: that is a lost build, not a replaced one.
                    if let Some(node_id) = task.node_id.as_deref().filter(|n| !n.is_empty()) {
                        if let Ok(node) = docker.inspect_node(node_id).await {
                            if watch::node_seen(&node) == watch::NodeSeen::Down {
                                return Err(LaunchError::NodeLost {
                                    node: watch::node_name(&node, node_id),
                                    node_id: node_id.to_string(),
                                });
                            }
                        }
                    }
                    return Ok(Wait::Gone);
                }
                TaskProgress::Failed(err) => {
                    let node_id = task.node_id.clone().unwrap_or_default();
                    let node = match docker.inspect_node(&node_id).await {
                        Ok(n) => n.description.and_then(|d| d.hostname).unwrap_or(node_id),
                        Err(_) => node_id,
                    };
                    return Err(LaunchError::TaskFailed {
                        service: service_name.to_string(),
                        node,
                        err,
                    });
                }
                TaskProgress::RanItself(state) => {
                    return Err(LaunchError::ImageHasForgexec {
                        service: service_name.to_string(),
                        state,
                    })
                }
                TaskProgress::Waiting(text) => {
                    if text != last {
                        tracing::debug!("{service_name}: task {text}");
                    }
                    last = text;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::TaskTimeout {
                service: service_name.to_string(),
                seconds: timeout.as_secs(),
                state: last,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(POLL_CAP);
    }
}

/// The nodes a service's tasks were placed on (none when it cannot be
/// listed).
pub async fn task_nodes(docker: &Docker, service_id: &str) -> Vec<String> {
    let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .unwrap_or_default();
    let mut nodes: Vec<String> = tasks
        .into_iter()
        .filter_map(|t| t.node_id)
        .filter(|n| !n.is_empty())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Whether a service still exists.
pub async fn exists(docker: &Docker, id: &str) -> Result<bool, LaunchError> {
    match docker.inspect_service(id, None).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(LaunchError::Docker {
            action: format!("inspecting service {id}"),
            message: docker_message(&e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerStatus, TaskStatus};

    fn task(state: TaskState, err: Option<&str>, container: Option<&str>) -> Task {
        Task {
            id: Some("t1".into()),
            node_id: Some("n1".into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(str::to_string),
                container_status: container.map(|c| ContainerStatus {
                    container_id: Some(c.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const MISSING: &str = "starting container failed: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"/forgexec\": stat /forgexec: no such file or directory: unknown";

    #[test]
    fn the_expected_start_failure_means_ready() {
        let t = task(TaskState::FAILED, Some(MISSING), Some("c1"));
        assert_eq!(
            classify(&t),
            TaskProgress::Ready(Placed {
                task_id: "t1".into(),
                node_id: "n1".into(),
                container_id: "c1".into()
            })
        );
    }

    #[test]
    fn other_failures_carry_dockers_error() {
        let t = task(
            TaskState::REJECTED,
            Some("No such image: nope:latest"),
            None,
        );
        assert_eq!(
            classify(&t),
            TaskProgress::Failed("No such image: nope:latest".into())
        );
        // the expected error without a container is still a failure
        let t = task(TaskState::FAILED, Some(MISSING), None);
        assert!(matches!(classify(&t), TaskProgress::Failed(_)));
    }

    #[test]
    fn constraints_go_into_the_placement_beside_the_platforms() {
        let req = ServiceRequest {
            name: "b".into(),
            image: "alpine:3".into(),
            constraints: vec![
                "node.labels.forge.pool==ci".into(),
                "node.role!=manager".into(),
            ],
            ..Default::default()
        };
        let json = serde_json::to_value(service_spec(&req)).unwrap();
        assert_eq!(
            json["TaskTemplate"]["Placement"],
            serde_json::json!({"Constraints": ["node.labels.forge.pool==ci", "node.role!=manager"]})
        );
        let req = ServiceRequest {
            platforms: vec![Platform {
                architecture: Some("amd64".into()),
                os: Some("linux".into()),
            }],
            ..req
        };
        let json = serde_json::to_value(service_spec(&req)).unwrap();
        let placement = &json["TaskTemplate"]["Placement"];
        assert_eq!(placement["Constraints"][0], "node.labels.forge.pool==ci");
        assert_eq!(placement["Platforms"][0]["Architecture"], "amd64");
    }

    #[test]
    fn a_resolved_request_is_reserved_and_limited() {
        let policy = ResourcePolicy {
            maxima: Limits {
                nano_cpus: Some(4_000_000_000),
                ..Limits::default()
            },
            reserve: true,
            ..ResourcePolicy::default()
        };
        let limits = policy
            .resolve(&Resources {
                nano_cpus: Some(1_500_000_000),
                memory_bytes: Some(512 << 20),
                pids: Some(64),
            })
            .unwrap();
        let req = ServiceRequest {
            limits,
            ..Default::default()
        };
        let json = serde_json::to_value(service_spec(&req)).unwrap();
        let resources = &json["TaskTemplate"]["Resources"];
        assert_eq!(resources["Reservations"]["NanoCPUs"], 1_500_000_000i64);
        assert_eq!(resources["Reservations"]["MemoryBytes"], 512 << 20);
        assert_eq!(resources["Limits"]["NanoCPUs"], 1_500_000_000i64);
        assert_eq!(resources["Limits"]["MemoryBytes"], 512 << 20);
        assert_eq!(resources["Limits"]["Pids"], 64);
        assert_eq!(show_bytes(512 << 20), "512MiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
        assert_eq!(show_cpus(1_500_000_000), "1.5");
    }

    #[test]
    fn early_states_wait_and_late_ones_are_reported() {
        let t = task(TaskState::PENDING, Some("no suitable node"), None);
        assert_eq!(
            classify(&t),
            TaskProgress::Waiting("pending: no suitable node".into())
        );
        let t = task(TaskState::RUNNING, None, Some("c1"));
        assert_eq!(classify(&t), TaskProgress::RanItself("running".into()));
        let t = task(TaskState::STARTING, None, Some("c2"));
        assert!(matches!(classify(&t), TaskProgress::Ready(p) if p.container_id == "c2"));
        let t = task(TaskState::STARTING, None, None);
        assert_eq!(classify(&t), TaskProgress::Waiting("starting".into()));
        let mut t = task(TaskState::PREPARING, None, None);
        t.desired_state = Some(TaskState::SHUTDOWN);
        assert_eq!(classify(&t), TaskProgress::Gone);
    }

    #[test]
    fn the_spec_has_the_build_settings_and_no_credential() {
        let req = ServiceRequest {
            name: "forge-o-r-1-x".into(),
            image: "img:1".into(),
            env: vec!["FORGE_SHA=abc".into()],
            labels: HashMap::from([("forge.repo".into(), "o/r".into())]),
            networks: vec!["host".into()],
            ports: vec![PortMapping {
                published: 8080,
                target: 80,
            }],
            limits: Limits {
                memory_bytes: Some(1 << 30),
                ..Limits::default()
            },
            platforms: crate::launch::binary::platforms(&[crate::launch::binary::Arch::Aarch64]),
            hosts: vec!["127.0.0.1 db".into()],
            constraints: Vec::new(),
        };
        let spec = service_spec(&req);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["TaskTemplate"]["ContainerSpec"]["Command"][0],
            "/forgexec"
        );
        assert_eq!(json["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        assert_eq!(
            json["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
            60_000_000_000i64
        );
        assert_eq!(json["TaskTemplate"]["Networks"][0]["Target"], "host");
        assert_eq!(
            json["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
            1 << 30
        );
        assert_eq!(json["EndpointSpec"]["Ports"][0]["PublishedPort"], 8080);
        assert_eq!(json["EndpointSpec"]["Ports"][0]["TargetPort"], 80);
        assert_eq!(json["Mode"]["Replicated"]["Replicas"], 1);
        assert_eq!(
            json["TaskTemplate"]["ContainerSpec"]["Hosts"],
            serde_json::json!(["127.0.0.1 db"])
        );
        assert_eq!(
            json["TaskTemplate"]["Placement"]["Platforms"],
            serde_json::json!([{"Architecture": "aarch64", "OS": "linux"}])
        );
        assert!(json["TaskTemplate"]["ContainerSpec"]
            .get("Secrets")
            .is_none());
        assert!(json["TaskTemplate"]["Resources"]
            .get("Reservations")
            .is_none());
    }

    #[test]
    fn reserved_limits_are_reservations_too() {
        let req = ServiceRequest {
            limits: Limits {
                nano_cpus: Some(2_000_000_000),
                memory_bytes: Some(512 << 20),
                pids: Some(100),
                reserve: true,
            },
            ..ServiceRequest::default()
        };
        let json = serde_json::to_value(service_spec(&req)).unwrap();
        let resources = &json["TaskTemplate"]["Resources"];
        assert_eq!(resources["Reservations"]["NanoCPUs"], 2_000_000_000i64);
        assert_eq!(resources["Reservations"]["MemoryBytes"], 512 << 20);
        assert_eq!(resources["Limits"]["NanoCPUs"], 2_000_000_000i64);
        assert_eq!(resources["Limits"]["Pids"], 100);
    }
}
