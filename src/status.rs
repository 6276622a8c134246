//! Commit statuses as a build reports them: `pending` updates go through a
//! background thread, in order, so a slow or failing forge never holds up
//! the build, and the one final
//! status is posted synchronously after them, with retries, so its fate
//! decides the exit code. Every status is also printed, which is all that
//! happens when no status URL is configured.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use crate::forge::{CommitStatus, ForgeClient, ForgeError, StatusState};
use crate::run::output::Masker;

/// Posts the statuses of one build.
pub struct StatusReporter {
    target: Option<(ForgeClient, String)>,
    context: String,
    target_url: Option<String>,
    masker: Masker,
    print: bool,
    queue: Option<Sender<CommitStatus>>,
    worker: Option<JoinHandle<()>>,
}

impl StatusReporter {
    /// `target` is the forge client and the statuses URL; `None` only prints.
    pub fn start(
        target: Option<(ForgeClient, String)>,
        context: String,
        target_url: Option<String>,
        masker: Masker,
    ) -> Self {
        let (queue, worker) = match &target {
            Some((client, url)) => {
                let (tx, rx) = mpsc::channel();
                let client = client.clone();
                let url = url.clone();
                let worker = std::thread::Builder::new()
                    .name("statuses".into())
                    .spawn(move || post_pending(&client, &url, rx))
                    .ok();
                (Some(tx), worker)
            }
            None => (None, None),
        };
        StatusReporter {
            target,
            context,
            target_url,
            masker,
            print: true,
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
        let description = self.masker.mask_str(description);
        if self.print {
            eprintln!(
                "forgexec: status {} [{}]: {}",
                state.as_str(),
                self.context,
                description
            );
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

    /// Sends what is queued, then posts the final status and waits for it.
    pub fn finish(
        mut self,
        state: StatusState,
        description: String,
        target_url: Option<String>,
    ) -> Result<(), ForgeError> {
        drop(self.queue.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        let status = self.status(
            state,
            &description,
            target_url.or_else(|| self.target_url.clone()),
        );
        match &self.target {
            None => Ok(()),
            Some((client, url)) => client.post_status(url, &status),
        }
    }
}

/// Posts pending statuses in order (a handful per build).
fn post_pending(client: &ForgeClient, url: &str, queue: Receiver<CommitStatus>) {
    while let Ok(status) = queue.recv() {
        if let Err(err) = client.post_status(url, &status) {
            tracing::warn!("pending status not posted: {err}");
            eprintln!("forgexec: warning: pending status not posted: {err}");
        }
    }
}
