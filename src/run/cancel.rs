//! Cancellation: SIGTERM, SIGINT, SIGHUP or SIGQUIT (from `docker stop`, a
//! removed service, Ctrl-C) mark the build cancelled. The runner forwards the
//! signal to the running command's process group, kills the group after the
//! grace period, runs no further command, and the build still uploads its log
//! and posts a final status before exiting with 128+signal.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Signals that cancel a build.
pub const CANCEL_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Shared cancellation state: which signal cancelled the build, if any.
#[derive(Clone, Debug)]
pub struct Cancellation {
    signal: Arc<AtomicI32>,
    grace: Duration,
}

impl Cancellation {
    /// A cancellation that only [`Cancellation::cancel`] triggers.
    pub fn new(grace: Duration) -> Self {
        Cancellation {
            signal: Arc::new(AtomicI32::new(0)),
            grace,
        }
    }

    /// Also triggered by the cancel signals delivered to this process.
    pub fn from_signals(grace: Duration) -> std::io::Result<Self> {
        let cancellation = Self::new(grace);
        let mut signals = signal_hook::iterator::Signals::new(CANCEL_SIGNALS)?;
        let handle = cancellation.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    tracing::warn!(signal, "cancellation requested");
                    handle.cancel(signal);
                }
            })?;
        Ok(cancellation)
    }

    /// Marks the build cancelled by `signal` (the first signal wins).
    pub fn cancel(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal that cancelled the build, if it was cancelled.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// `SIGTERM` for 15, for messages.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
