//! Commit statuses as a build reports them. `pending` updates go through a
//! background thread so a slow or failing forge never holds up the build;
//! each gets a short budget
//! ([`PENDING_STATUS_BUDGET`](crate::http::policy::PENDING_STATUS_BUDGET)), only the newest of
//! those waiting is sent, and none while the forge's rate limit holds. When
//! the final status is due, unsent `pending` updates are dropped and the
//! final one is posted at once, synchronously, with retries within
//! [`FINAL_STATUS_BUDGET`], so its fate decides the exit code. Writes are at
//! least [`MIN_STATUS_INTERVAL`](crate::http::policy::MIN_STATUS_INTERVAL) apart. Every status is also printed (masked),
//! which is all that happens when no status URL is configured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::forge::{CommitStatus, ForgeClient, ForgeError, StatusState};
use crate::http::policy::{RetryPolicy, StatusPace, FINAL_STATUS_BUDGET};
use crate::render::Renderer;
use crate::run::output::Masker;

/// Posts the statuses of one build.
pub struct StatusReporter {
    target: Option<(ForgeClient, String)>,
    context: String,
    target_url: Option<String>,
    renderer: Renderer,
    print: bool,
    shared: Arc<Shared>,
    queue: Option<Sender<CommitStatus>>,
    worker: Option<JoinHandle<()>>,
}

/// What the build and the pending worker share.
#[derive(Default)]
struct Shared {
    pace: Mutex<StatusPace>,
    /// The final status is due: the worker sends nothing more.
    final_due: AtomicBool,
}

impl Shared {
    fn pace(&self) -> std::sync::MutexGuard<'_, StatusPace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `wait`, cut short (returning false) when the final status
    /// becomes due.
    fn sleep_unless_final(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            if self.final_due.load(Ordering::SeqCst) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

impl StatusReporter {
    /// `target` is the forge client and the statuses URL; `None` only prints.
    pub fn start(
        target: Option<(ForgeClient, String)>,
        context: String,
        target_url: Option<String>,
        masker: Masker,
    ) -> Self {
        let renderer = Renderer::new(masker);
        let shared = Arc::new(Shared::default());
        let (queue, worker) = match &target {
            Some((client, url)) => {
                let (tx, rx) = mpsc::channel();
                let client = client.with_retry_policy(RetryPolicy::for_pending_status());
                let url = url.clone();
                let shared = Arc::clone(&shared);
                let renderer = renderer.clone();
                let worker = std::thread::Builder::new()
                    .name("statuses".into())
                    .spawn(move || post_pending(&client, &url, rx, &shared, &renderer))
                    .ok();
                (Some(tx), worker)
            }
            None => (None, None),
        };
        StatusReporter {
            target,
            context,
            target_url: target_url.filter(|url| !crate::http::has_credentials(url)),
            renderer,
            print: true,
            shared,
            queue,
            worker,
        }
    }

    /// Whether statuses are also printed (to stderr); on by default.
    pub fn printing(mut self, print: bool) -> Self {
        self.print = print;
        self
    }

    fn status(
        &self,
        state: StatusState,
        description: &str,
        target_url: Option<String>,
    ) -> CommitStatus {
        let description = self.renderer.text(description);
        if self.print {
            self.renderer.say(&format!(
                "forgexec: status {} [{}]: {}",
                state.as_str(),
                self.context,
                description
            ));
        }
        CommitStatus::new(state, self.context.clone(), &description, target_url)
    }

    /// Queues a `pending` status; never blocks on the network.
    pub fn pending(&self, description: String) {
        let status = self.status(StatusState::Pending, &description, self.target_url.clone());
        if let Some(queue) = &self.queue {
            let _ = queue.send(status);
        }
    }

    /// Drops the `pending` updates not sent yet, lets one in flight end (its
    /// budget is short), then posts the final status within
    /// [`FINAL_STATUS_BUDGET`] and returns its fate. A `target_url` that
    /// carries credentials (user info, a signed query) is not used.
    pub fn finish(
        mut self,
        state: StatusState,
        description: String,
        target_url: Option<String>,
    ) -> Result<(), ForgeError> {
        let started = Instant::now();
        self.shared.final_due.store(true, Ordering::SeqCst);
        drop(self.queue.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        let target_url = target_url
            .filter(|url| !crate::http::has_credentials(url))
            .or_else(|| self.target_url.clone());
        let status = self.status(state, &description, target_url);
        let Some((client, url)) = &self.target else {
            return Ok(());
        };
        // Wait out the spacing and a known rate limit when the budget
        // allows; past it, one attempt is still worth making.
        let wait = self.shared.pace().wait_before_write(Instant::now());
        if started.elapsed() + wait < FINAL_STATUS_BUDGET {
            std::thread::sleep(wait);
        }
        let left = FINAL_STATUS_BUDGET.saturating_sub(started.elapsed());
        let client = client.with_retry_policy(RetryPolicy::for_status(left));
        client.post_status(url, &status)
    }
}

/// Posts pending statuses in order: the newest of those waiting, at least
/// [`MIN_STATUS_INTERVAL`](crate::http::policy::MIN_STATUS_INTERVAL) after the last write, none while rate limited,
/// nothing once the final status is due.
fn post_pending(
    client: &ForgeClient,
    url: &str,
    queue: Receiver<CommitStatus>,
    shared: &Shared,
    renderer: &Renderer,
) {
    let mut first = true;
    while let Ok(mut status) = queue.recv() {
        // Only the newest update matters: older ones would be overwritten.
        // The first one always goes out: it tells the pull request that the
        // build was picked up.
        if !first {
            while let Ok(newer) = queue.try_recv() {
                status = newer;
            }
        }
        first = false;
        if shared.final_due.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let wait = {
            let pace = shared.pace();
            if pace.is_limited(now) {
                tracing::debug!("pending status skipped: the forge's rate limit holds");
                continue;
            }
            pace.wait_before_write(now)
        };
        if !shared.sleep_unless_final(wait) {
            return;
        }
        let result = client.post_status(url, &status);
        let mut pace = shared.pace();
        pace.wrote(Instant::now());
        if let Err(err) = result {
            if let Some(wait) = err.rate_limit() {
                pace.limited_for(Instant::now(), wait);
            }
            tracing::warn!(
                "{}",
                renderer.text(&format!(
                    "pending status not posted: {}",
                    renderer.error(&err)
                ))
            );
        }
    }
}
