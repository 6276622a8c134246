//! Running one command: in its own process group (so a timeout or a
//! cancellation reaches everything it started), with stdin closed and stdout
//! and stderr merged into one pipe that is pumped into the output sink, under
//! the command's and the build's deadlines. Process handling is duct's.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::cancel::Cancellation;
use super::output::OutputSink;

/// How often a waiting runner wakes to check for cancellation; a command's
/// exit wakes it at once.
const WAKE_INTERVAL: Duration = Duration::from_millis(100);
/// After a command exits, how long its output may still drain (background
/// processes it left may hold the pipe open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// One process to run.
pub struct Invocation {
    pub argv: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// The command's own limit.
    pub timeout: Option<Duration>,
    /// The whole build's deadline.
    pub build_deadline: Option<Instant>,
}

/// Which limit ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Command(Duration),
    Build,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Signaled(i32),
    TimedOut(Limit),
    /// The build was cancelled by this signal while the command ran.
    Cancelled(i32),
    /// The program could not be started.
    SpawnFailed(String),
}

impl Finish {
    pub fn succeeded(&self) -> bool {
        matches!(self, Finish::Exited(0))
    }
}

/// Runs the invocation to completion, streaming its output into `sink`.
/// Returns the process group id it used (to clean up leftovers at the end)
/// and how it finished.
pub fn run(
    inv: &Invocation,
    sink: &Arc<OutputSink>,
    cancel: &Cancellation,
) -> (Option<i32>, Finish) {
    let Some((program, args)) = inv.argv.split_first() else {
        return (None, Finish::SpawnFailed("empty command".into()));
    };
    let (reader, writer) = match os_pipe::pipe() {
        Ok(pair) => pair,
        Err(e) => {
            return (
                None,
                Finish::SpawnFailed(format!("cannot create a pipe: {e}")),
            )
        }
    };
    let writer_for_stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => {
            return (
                None,
                Finish::SpawnFailed(format!("cannot create a pipe: {e}")),
            )
        }
    };
    let handle = {
        let expression = duct::cmd(program, args)
            .dir(&inv.dir)
            .full_env(inv.env.iter().cloned())
            .stdin_null()
            .stdout_file(writer)
            .stderr_file(writer_for_stderr)
            .unchecked()
            .before_spawn(|command| {
                // Own process group: signals and kills reach the whole tree.
                command.process_group(0);
                Ok(())
            });
        match expression.start() {
            Ok(handle) => handle,
            Err(e) => return (None, Finish::SpawnFailed(spawn_error(program, &e))),
        }
        // `expression` (holding our copies of the pipe's write end) is
        // dropped here, so the reader sees EOF when the command's side closes.
    };
    let pgid = handle.pids().first().map(|&p| p as i32);
    let pump_sink = Arc::clone(sink);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = pump_sink.pump(reader);
        let _ = done_tx.send(());
    });

    let started = Instant::now();
    let command_deadline = inv.timeout.map(|t| started + t);
    let mut cancelled: Option<(i32, Instant)> = None;
    let finish = loop {
        let now = Instant::now();
        if cancelled.is_none() {
            if let Some(signal) = cancel.signal() {
                // Forward the cancellation to the command's group and give it
                // the grace period to shut down cleanly.
                signal_group(pgid, signal);
                cancelled = Some((signal, now + cancel.grace()));
            }
        }
        let limits = [
            command_deadline.map(|d| (d, Limit::Command(inv.timeout.unwrap_or_default()))),
            inv.build_deadline.map(|d| (d, Limit::Build)),
        ];
        if let Some((_, limit)) = limits
            .iter()
            .flatten()
            .filter(|(d, _)| *d <= now)
            .min_by_key(|(d, _)| *d)
        {
            if cancelled.is_none() {
                kill_group(pgid);
                let _ = handle.wait();
                break Finish::TimedOut(*limit);
            }
        }
        if let Some((signal, grace_end)) = cancelled {
            if grace_end <= now {
                kill_group(pgid);
                let _ = handle.wait();
                break Finish::Cancelled(signal);
            }
        }
        let mut wake = now + WAKE_INTERVAL;
        for deadline in [command_deadline, inv.build_deadline, cancelled.map(|c| c.1)]
            .into_iter()
            .flatten()
        {
            wake = wake.min(deadline);
        }
        match handle.wait_deadline(wake) {
            Ok(Some(output)) => {
                let status = output.status;
                break match (cancelled, status.code(), status.signal()) {
                    (Some((signal, _)), _, _) => Finish::Cancelled(signal),
                    (None, Some(code), _) => Finish::Exited(code),
                    (None, None, Some(sig)) => Finish::Signaled(sig),
                    (None, None, None) => Finish::Exited(-1),
                };
            }
            Ok(None) => continue,
            Err(e) => {
                kill_group(pgid);
                break Finish::SpawnFailed(format!("lost track of the process: {e}"));
            }
        }
    };
    // Let the output drain; a background process may keep the pipe open, in
    // which case its further output still goes to the log as it comes.
    let _ = done_rx.recv_timeout(DRAIN_AFTER_EXIT);
    (pgid, finish)
}

fn spawn_error(program: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => {
            format!("`{program}` not found (is it installed in the image and on PATH?)")
        }
        io::ErrorKind::PermissionDenied => format!("`{program}` is not executable"),
        _ => format!("cannot start `{program}`: {err}"),
    }
}

/// Sends `signal` to a process group (ignoring a group that is already gone).
pub fn signal_group(pgid: Option<i32>, signal: i32) {
    if let (Some(pgid), Ok(signal)) = (pgid, Signal::try_from(signal)) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Kills a whole process group.
pub fn kill_group(pgid: Option<i32>) {
    signal_group(pgid, libc::SIGKILL);
}
