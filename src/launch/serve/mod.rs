//! `forge-launch serve`: the forge's webhooks in, builds out. A delivery
//! is verified ([`webhook`]), recorded and acknowledged at once; its build
//! goes through `forge-launch swarm`'s launch path, with a static token or
//! a GitHub App's installation token ([`app`]); serve follows each build to
//! its end and posts the final status when forgexec could not ([`builds`]);
//! [`metrics`] and `/healthz` make it operable ([`http`]). The swarm is the
//! only state: serve keeps no database.

pub mod app;
pub mod builds;
pub mod final_status;
pub mod http;
pub mod metrics;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::app::{AppError, Credentials};
use self::builds::Recent;
use self::metrics::Metrics;
use self::webhook::{PushPolicy, WebhookKey};
use super::binary::Binaries;
use super::forge::{CommitStatus, Forge, StatusState};
use super::node::NodeAccess;
use super::service::ResourcePolicy;
use crate::facts::BuildContext;
use crate::render::Renderer;
use crate::run::output::Masker;
use crate::secret::Secret;

/// Everything `forge-launch serve` was asked to do.
#[derive(Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub credentials: Credentials,
    pub push: PushPolicy,
    /// `--fork-prs build` (the default) or `skip`.
    pub build_forks: bool,
    pub action: String,
    pub api_url: String,
    pub artifacts_url: Option<String>,
    pub target_url: Option<String>,
    pub forgexec: Binaries,
    pub networks: Vec<String>,
    pub constraints: Vec<String>,
    pub resources: ResourcePolicy,
    pub node_access: NodeAccess,
    /// `--registry-auth`: logins for pulling build and sidecar images.
    pub registry_auth: Option<std::sync::Arc<super::registry::RegistryAuth>>,
    pub start_timeout: Duration,
    /// How many times a build whose node went down is launched again.
    pub retry_lost: u32,
    /// Finished build services older than this are removed.
    pub retention: Duration,
    /// How often finished services are looked for.
    pub gc_interval: Duration,
    /// How long SIGTERM waits for launches in flight.
    pub shutdown_timeout: Duration,
    /// How long a task may wait for a node before `pending` "queued".
    pub queued_after: Duration,
    /// Launches under way at once; more deliveries wait in their lanes.
    pub max_launches: usize,
}

/// Launches that copy forgexec (megabytes) into their containers at once.
const COPY_SLOTS: usize = 2;

/// Why serve could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: cannot read the webhook secret: {source}")]
    Secret {
        path: PathBuf,
        source: crate::fsread::FsReadError,
    },
    #[error("{path}: the webhook secret file is not UTF-8 text")]
    SecretNotText { path: PathBuf },
    #[error("{path}: the webhook secret file is empty")]
    EmptySecret { path: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    App(#[from] AppError),
}

/// Reads the webhook secret (surrounding whitespace trimmed).
pub fn read_secret(path: &std::path::Path) -> Result<Secret, ServeError> {
    // An operator's path: a regular file (links followed), never a FIFO or
    // device that would hang start-up, and small.
    let bytes = crate::fsread::read_regular(path, crate::fsread::Links::Follow, 64 * 1024)
        .map_err(|source| ServeError::Secret {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| ServeError::SecretNotText {
        path: path.to_path_buf(),
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ServeError::EmptySecret {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(secret))
}

/// The running service's shared state.
pub struct Serve {
    pub opts: ServeOptions,
    pub key: WebhookKey,
    pub metrics: Metrics,
    http: reqwest::Client,
    /// Masks the webhook secret and the static token in everything logged.
    renderer: Renderer,
    pub recent: Mutex<Recent>,
    /// The order of each pull request's launches.
    pub lanes: builds::Lanes,
    /// Launches under way at once (`--max-launches`).
    pub launch_slots: tokio::sync::Semaphore,
    /// Launches copying forgexec into their container at once.
    pub copy_slots: Arc<tokio::sync::Semaphore>,
    /// Launches and cancellations in flight.
    pub inflight: tokio::sync::watch::Sender<usize>,
    /// The swarm's nodes as the manager sees them, for every build
    /// followed (a node that goes down ends its builds).
    pub nodes: super::watch::NodeView,
}

impl Serve {
    pub fn new(opts: ServeOptions, secret: &Secret) -> Result<Serve, ServeError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("forge-launch/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ServeError::Client(e.to_string()))?;
        let max_launches = opts.max_launches.max(1);
        let mut secrets = vec![secret.expose().to_string()];
        if let Credentials::Static(token) = &opts.credentials {
            secrets.push(token.expose().to_string());
        }
        Ok(Serve {
            key: WebhookKey::new(secret.expose().as_bytes()),
            opts,
            metrics: Metrics::new(),
            http,
            renderer: Renderer::new(Masker::new(secrets.iter().map(String::as_str))),
            recent: Mutex::new(Recent::default()),
            lanes: builds::Lanes::default(),
            launch_slots: tokio::sync::Semaphore::new(max_launches),
            copy_slots: Arc::new(tokio::sync::Semaphore::new(COPY_SLOTS)),
            inflight: tokio::sync::watch::channel(0).0,
            nodes: super::watch::NodeView::default(),
        })
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The token a build of `repo` (through `installation`) gets.
    pub async fn credentials_for(
        &self,
        installation: Option<u64>,
        repo: &str,
    ) -> Result<Option<Secret>, AppError> {
        self.opts
            .credentials
            .token_for(&self.http, &self.opts.api_url, installation, repo)
            .await
    }

    /// Posts a status for `build` (best effort, counted).
    pub async fn post(
        &self,
        build: &BuildContext,
        installation: Option<u64>,
        state: StatusState,
        description: &str,
    ) {
        let Some(url) = &build.status_url else { return };
        let status = CommitStatus::new(
            state,
            build.status_context.clone(),
            description,
            build.target_url.clone(),
        );
        self.post_to(url, &status, installation, &build.repo).await;
    }

    /// Posts `status` to `url` with a token for `repo`.
    pub async fn post_to(
        &self,
        url: &str,
        status: &CommitStatus,
        installation: Option<u64>,
        repo: &str,
    ) {
        let result = async {
            let token = self.credentials_for(installation, repo).await?;
            Forge::new(token)?.post_status(url, status).await?;
            Ok::<(), super::LaunchError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.metrics.statuses_posted.inc();
            }
            Err(err) => {
                self.metrics.statuses_failed.inc();
                tracing::warn!(
                    "could not post the status to {url}: {}",
                    self.renderer.error(&err)
                );
            }
        }
    }
}

/// Runs `forge-launch serve` until SIGTERM or SIGINT.
pub async fn run(opts: ServeOptions, secret: Secret) -> Result<(), ServeError> {
    let serve = Arc::new(Serve::new(opts, &secret)?);
    drop(secret);
    let listener = tokio::net::TcpListener::bind(serve.opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: serve.opts.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(serve.opts.listen);
    tracing::info!("forge-launch serve: listening on {addr}");
    let gc = tokio::spawn(gc_loop(Arc::clone(&serve)));
    let resumed = tokio::spawn(builds::pick_up(Arc::clone(&serve)));
    http::serve(Arc::clone(&serve), listener, shutdown_signal()).await;
    gc.abort();
    resumed.abort();
    // Running builds are left alone; launches in flight get a bound.
    let mut inflight = serve.inflight.subscribe();
    let waited =
        tokio::time::timeout(serve.opts.shutdown_timeout, inflight.wait_for(|n| *n == 0)).await;
    if waited.is_err() {
        tracing::warn!(
            "forge-launch serve: {} launches still in flight after {:?}; stopping anyway",
            *serve.inflight.borrow(),
            serve.opts.shutdown_timeout
        );
    }
    tracing::info!("forge-launch serve: stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("forge-launch serve: stopping (no new deliveries)");
}

/// Removes finished build services past their retention, on a timer.
async fn gc_loop(serve: Arc<Serve>) {
    let mut tick = tokio::time::interval(serve.opts.gc_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match super::swarm::gc(serve.opts.retention, None, &serve.opts.node_access).await {
            Ok(removed) => {
                for name in removed {
                    tracing::info!("{name}: removed (finished, past retention)");
                }
            }
            Err(err) => tracing::warn!("gc: {}", serve.renderer.error(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_secret_file_must_be_a_small_regular_file_of_text() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("secret");
        std::fs::write(&good, "  s3cret-value\n").unwrap();
        assert_eq!(read_secret(&good).unwrap().expose(), "s3cret-value");

        // A FIFO would block the read forever: refused at once.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let err = read_secret(&fifo).unwrap_err();
        assert!(matches!(err, ServeError::Secret { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));

        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            read_secret(&binary),
            Err(ServeError::SecretNotText { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(matches!(
            read_secret(&empty),
            Err(ServeError::EmptySecret { .. })
        ));
    }

    #[test]
    fn the_app_key_file_is_never_read_from_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("key.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let err = app::App::load(1, &fifo).unwrap_err();
        assert!(matches!(err, app::AppError::ReadKey { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
