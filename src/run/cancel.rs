//! Cancellation: SIGTERM, SIGINT, SIGHUP or SIGQUIT (from `docker stop`, a
//! removed service, Ctrl-C) mark the build cancelled. The runner forwards the
//! signal to the running command's process group, kills the group after the
//! grace period, runs no further command, and the build still uploads its log
//! and posts a final status before exiting with 128+signal.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

/// Signals that cancel a build.
pub const CANCEL_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Shared cancellation state: which signal cancelled the build, if any.
#[derive(Clone, Debug)]
pub struct Cancellation {
    /// The signal's number, 0 while not cancelled (one atomic, so that the
    /// signal thread never blocks).
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
        let mut signals = signal_hook::iterator::Signals::new(CANCEL_SIGNALS.map(|s| s as i32))?;
        let handle = cancellation.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for number in signals.forever() {
                    if let Ok(signal) = Signal::try_from(number) {
                        tracing::warn!(signal = signal.as_str(), "cancellation requested");
                        handle.cancel(signal);
                    }
                }
            })?;
        Ok(cancellation)
    }

    /// Marks the build cancelled by `signal` (the first signal wins).
    pub fn cancel(&self, signal: Signal) {
        let _ = self
            .signal
            .compare_exchange(0, signal as i32, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal that cancelled the build, if it was cancelled.
    pub fn signal(&self) -> Option<Signal> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            number => Signal::try_from(number).ok(),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// `SIGTERM` for 15, for messages; a number nix cannot name (real-time
/// signals) as `signal N`.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
