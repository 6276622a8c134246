//! Following a started build to its end: the container's exit, read
//! through its node's daemon, raced against the manager's view of that
//! node. A node that goes down (its daemon killed, the machine gone) never
//! answers the wait: its connection hangs or breaks, so the wait is
//! cancelled as soon as the manager marks the node down, and the build
//! ends as lost with its node. `forge-launch swarm --wait` and `serve` both
//! follow builds this way.

use std::time::{Duration, Instant};

use bollard::models::{Node, NodeState};
use bollard::Docker;
use futures_util::StreamExt;

use super::error::is_not_found;
use super::node::NodeAccess;
use super::swarm::{self, Running};
use super::LaunchError;

/// How often the manager is asked about the nodes of the builds followed.
pub const NODE_POLL: Duration = Duration::from_secs(2);
/// How long one question to the manager may take.
const MANAGER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node may stay `unknown` before it counts as lost: a manager
/// that just restarted shows every node unknown until it reconnects.
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(20);
/// How often, and how far apart, a broken wait on a node that is still up
/// is retried (its daemon may have restarted, or the network blinked).
const WAIT_ATTEMPTS: u32 = 30;
const WAIT_RETRY: Duration = Duration::from_secs(5);
/// How long the container's final state may take to read.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the manager says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSeen {
    Up,
    /// `down` or `disconnected`: its heartbeats stopped.
    Down,
    /// `unknown` (or no state): lost only if it stays so.
    Unknown,
    /// No longer in the swarm (`docker node rm`).
    Gone,
}

/// The state a node is reported in.
pub fn node_seen(node: &Node) -> NodeSeen {
    match node.status.as_ref().and_then(|s| s.state) {
        Some(NodeState::READY) => NodeSeen::Up,
        Some(NodeState::DOWN | NodeState::DISCONNECTED) => NodeSeen::Down,
        Some(NodeState::UNKNOWN) | None => NodeSeen::Unknown,
    }
}

/// The node's host name, else its id: how statuses name it.
pub fn node_name(node: &Node, node_id: &str) -> String {
    node.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| node_id.to_string())
}

/// Decides from successive looks whether a node is lost: at once when it
/// is down or gone, after [`UNKNOWN_GRACE`] of unbroken `unknown`. A look
/// that failed (the manager did not answer) decides nothing.
#[derive(Debug, Default)]
pub struct LossJudge {
    unknown_since: Option<Instant>,
}

impl LossJudge {
    pub fn lost(&mut self, seen: Option<NodeSeen>, now: Instant) -> bool {
        match seen {
            None => false,
            Some(NodeSeen::Down | NodeSeen::Gone) => true,
            Some(NodeSeen::Up) => {
                self.unknown_since = None;
                false
            }
            Some(NodeSeen::Unknown) => {
                let since = *self.unknown_since.get_or_insert(now);
                now.duration_since(since) >= UNKNOWN_GRACE
            }
        }
    }
}

/// The text of a build lost with its node (its final status when it is
/// not retried).
pub fn lost_text(node: &str) -> String {
    format!("node {node} went down during the build")
}

/// The `pending` status of a retry.
pub fn retry_text(attempt: u32, of: u32, node: &str) -> String {
    format!("retry {attempt} of {of} after node {node} went down")
}

/// The constraint that keeps a retry off the node that was lost.
pub fn avoid_constraint(node_id: &str) -> String {
    format!("node.id!={node_id}")
}

/// How a build's container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It stopped with this exit code.
    Exited {
        code: i64,
        oom_killed: bool,
        /// The container's memory limit, if it had one.
        memory_limit: Option<i64>,
    },
    /// It was removed before anyone saw it end.
    Removed,
    /// Its node went down while it ran.
    NodeLost { node: String, node_id: String },
}

/// The manager's view of the swarm's nodes, shared by every build a
/// process follows: one `docker node ls` per [`NODE_POLL`] however many
/// builds are watched (serve follows many at once).
#[derive(Debug, Default)]
pub struct NodeView {
    last: tokio::sync::Mutex<Option<(Instant, NodeMap)>>,
}

/// Each node's state and name, by id.
type NodeMap = std::sync::Arc<std::collections::HashMap<String, (NodeSeen, String)>>;

impl NodeView {
    /// How node `node_id` looks (state, name), from a list at most
    /// [`NODE_POLL`] old; `None` when the manager does not answer. A node
    /// missing from the list is [`NodeSeen::Gone`].
    pub async fn look(&self, manager: &Docker, node_id: &str) -> Option<(NodeSeen, String)> {
        let mut last = self.last.lock().await;
        let fresh = last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < NODE_POLL);
        if !fresh {
            let listed = tokio::time::timeout(
                MANAGER_TIMEOUT,
                manager.list_nodes(None::<bollard::query_parameters::ListNodesOptions>),
            )
            .await;
            match listed {
                Ok(Ok(nodes)) => {
                    let map = nodes
                        .iter()
                        .filter_map(|n| {
                            let id = n.id.clone()?;
                            let name = node_name(n, &id);
                            Some((id, (node_seen(n), name)))
                        })
                        .collect();
                    *last = Some((Instant::now(), std::sync::Arc::new(map)));
                }
                Ok(Err(e)) => {
                    tracing::debug!("listing the swarm's nodes: {e}");
                    return None;
                }
                Err(_) => return None,
            }
        }
        let (_, map) = last.as_ref()?;
        Some(
            map.get(node_id)
                .cloned()
                .unwrap_or_else(|| (NodeSeen::Gone, node_id.to_string())),
        )
    }
}

/// Resolves when the manager sees `node_id` lost; returns its name.
pub async fn node_lost(view: &NodeView, manager: &Docker, node_id: &str) -> String {
    let mut judge = LossJudge::default();
    let mut name = node_id.to_string();
    loop {
        let seen = match view.look(manager, node_id).await {
            Some((seen, named)) => {
                name = named;
                Some(seen)
            }
            None => None,
        };
        if judge.lost(seen, Instant::now()) {
            return name;
        }
        tokio::time::sleep(NODE_POLL).await;
    }
}

/// Follows `running` to its end: `logs` streams its output to stdout
/// first (`swarm --wait`). Never waits on a node the manager sees lost.
pub async fn to_end(
    view: &NodeView,
    manager: &Docker,
    local_node: &str,
    running: &Running,
    access: &NodeAccess,
    logs: bool,
) -> Result<Ending, LaunchError> {
    let ended = container_end(manager, local_node, running, access, logs);
    let lost = node_lost(view, manager, &running.node_id);
    tokio::select! {
        biased;
        ending = ended => ending,
        node = lost => {
            tracing::warn!("{}", lost_text(&node));
            Ok(Ending::NodeLost { node, node_id: running.node_id.clone() })
        }
    }
}

/// Waits for the container through its node's daemon, retrying a broken
/// wait (the caller stops it when the node is lost).
async fn container_end(
    manager: &Docker,
    local_node: &str,
    running: &Running,
    access: &NodeAccess,
    mut logs: bool,
) -> Result<Ending, LaunchError> {
    let container = &running.container_id;
    let mut attempts = 0;
    loop {
        let failure = match swarm::node_daemon(manager, local_node, &running.node_id, access).await
        {
            Ok(node_docker) => {
                // Builds outlive the per-request timeout.
                let streaming = node_docker
                    .clone()
                    .with_timeout(Duration::from_secs(7 * 86_400));
                if std::mem::take(&mut logs) {
                    swarm::stream_logs(&streaming, container).await;
                }
                let waited = streaming
                    .wait_container(
                        container,
                        None::<bollard::query_parameters::WaitContainerOptions>,
                    )
                    .next()
                    .await;
                let ended = match waited {
                    Some(Ok(_))
                    | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {
                        final_state(&node_docker, container).await
                    }
                    Some(Err(e)) if is_not_found(&e) => Ok(Ending::Removed),
                    Some(Err(e)) => Err(LaunchError::docker(
                        format!("waiting for container {container}"),
                        e,
                    )),
                    None => Err(LaunchError::Docker {
                        action: format!("waiting for container {container}"),
                        message: "the daemon closed the wait without an exit code".into(),
                    }),
                };
                match ended {
                    // "No such container" from another daemon now at the
                    // node's address (a replaced machine) is no news of
                    // the build: its node is lost, which the manager says.
                    Ok(Ending::Removed) if !is_node(&node_docker, &running.node_id).await => {
                        LaunchError::Docker {
                            action: format!("waiting for container {container}"),
                            message: format!(
                                "the daemon at node {}'s address is another node's",
                                running.node_id
                            ),
                        }
                    }
                    Ok(ending) => return Ok(ending),
                    Err(err) => err,
                }
            }
            Err(err) => err,
        };
        attempts += 1;
        if attempts >= WAIT_ATTEMPTS {
            return Err(failure);
        }
        tracing::debug!("{container}: retrying the wait: {failure}");
        tokio::time::sleep(WAIT_RETRY).await;
    }
}

/// Whether the daemon `docker` is swarm node `node_id`.
async fn is_node(docker: &Docker, node_id: &str) -> bool {
    match tokio::time::timeout(MANAGER_TIMEOUT, docker.info()).await {
        Ok(Ok(info)) => info.swarm.and_then(|s| s.node_id).as_deref() == Some(node_id),
        _ => false,
    }
}

/// The exit code (and OOM kill) of a container that stopped.
async fn final_state(docker: &Docker, container: &str) -> Result<Ending, LaunchError> {
    let inspect = tokio::time::timeout(INSPECT_TIMEOUT, docker.inspect_container(container, None))
        .await
        .map_err(|_| LaunchError::Docker {
            action: format!("inspecting container {container}"),
            message: format!("no answer within {}s", INSPECT_TIMEOUT.as_secs()),
        })?;
    let inspect = match inspect {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Ok(Ending::Removed),
        Err(e) => {
            return Err(LaunchError::docker(
                format!("inspecting container {container}"),
                e,
            ))
        }
    };
    let state = inspect.state.unwrap_or_default();
    Ok(Ending::Exited {
        code: state.exit_code.unwrap_or(-1),
        oom_killed: state.oom_killed.unwrap_or(false),
        memory_limit: inspect
            .host_config
            .and_then(|h| h.memory)
            .filter(|m| *m > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{NodeDescription, NodeStatus};

    fn node(state: Option<NodeState>, hostname: Option<&str>) -> Node {
        Node {
            id: Some("n1".into()),
            status: Some(NodeStatus {
                state,
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: hostname.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn down_and_disconnected_nodes_are_down() {
        assert_eq!(node_seen(&node(Some(NodeState::READY), None)), NodeSeen::Up);
        assert_eq!(
            node_seen(&node(Some(NodeState::DOWN), None)),
            NodeSeen::Down
        );
        assert_eq!(
            node_seen(&node(Some(NodeState::DISCONNECTED), None)),
            NodeSeen::Down
        );
        assert_eq!(
            node_seen(&node(Some(NodeState::UNKNOWN), None)),
            NodeSeen::Unknown
        );
        assert_eq!(node_seen(&Node::default()), NodeSeen::Unknown);
    }

    #[test]
    fn a_node_is_named_by_its_hostname_else_its_id() {
        assert_eq!(node_name(&node(None, Some("worker-2")), "n1"), "worker-2");
        assert_eq!(node_name(&node(None, Some("")), "n1"), "n1");
        assert_eq!(node_name(&Node::default(), "n1"), "n1");
    }

    #[test]
    fn down_or_gone_is_lost_at_once() {
        let now = Instant::now();
        assert!(LossJudge::default().lost(Some(NodeSeen::Down), now));
        assert!(LossJudge::default().lost(Some(NodeSeen::Gone), now));
        assert!(!LossJudge::default().lost(Some(NodeSeen::Up), now));
    }

    #[test]
    fn unknown_is_lost_only_when_it_lasts() {
        let t0 = Instant::now();
        let mut judge = LossJudge::default();
        assert!(!judge.lost(Some(NodeSeen::Unknown), t0));
        assert!(!judge.lost(Some(NodeSeen::Unknown), t0 + UNKNOWN_GRACE / 2));
        // an answer from a node that is up starts the count again
        assert!(!judge.lost(Some(NodeSeen::Up), t0 + UNKNOWN_GRACE / 2));
        assert!(!judge.lost(Some(NodeSeen::Unknown), t0 + UNKNOWN_GRACE));
        // a manager that did not answer decides nothing
        assert!(!judge.lost(None, t0 + UNKNOWN_GRACE * 2));
        assert!(judge.lost(Some(NodeSeen::Unknown), t0 + UNKNOWN_GRACE + UNKNOWN_GRACE));
    }

    #[test]
    fn the_texts_name_the_node_and_the_retry() {
        assert_eq!(
            lost_text("worker-2"),
            "node worker-2 went down during the build"
        );
        assert_eq!(
            retry_text(1, 1, "worker-2"),
            "retry 1 of 1 after node worker-2 went down"
        );
        assert_eq!(avoid_constraint("abc123"), "node.id!=abc123");
    }
}
