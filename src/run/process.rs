//! Running one command: in its own process group (so a timeout or a
//! cancellation reaches everything it started), with stdin closed and stdout
//! and stderr merged into one pipe that is pumped into the output sink, under
//! the command's and the build's deadlines. duct starts and reaps the
//! process; the runner's one thread polls the output pipe and a pidfd of the
//! command, so a command costs no extra thread.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use os_pipe::PipeReader;

use super::cancel::Cancellation;
use super::output::{LineBuffer, OutputSink};

/// How often a waiting runner wakes to check for cancellation; a command's
/// output or exit wakes it at once.
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
    pub build_deadline: Option<Deadline>,
}

/// When the whole build must end, and the timeout that set it (for the
/// message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

/// Which limit ended a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Command(Duration),
    Build(Duration),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Exited(i32),
    /// Killed by a signal it did not get from us (a raw number: it may be a
    /// real-time signal that has no [`Signal`] name).
    Signaled(i32),
    TimedOut(Limit),
    /// The build was cancelled by this signal while the command ran.
    Cancelled(Signal),
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
///
/// One thread does everything: it polls the output pipe and a pidfd of the
/// command (Linux 5.3+; without one, it checks on the command in short,
/// growing slices), so a command costs no thread and wakes the runner the
/// moment it prints or exits.
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
    widen_pipe(&reader);
    let writer_for_stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => {
            return (
                None,
                Finish::SpawnFailed(format!("cannot create a pipe: {e}")),
            )
        }
    };
    let program = program_path(program, &inv.dir);
    let handle = {
        let expression = duct::cmd(&program, args)
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
            Err(e) => {
                return (
                    None,
                    Finish::SpawnFailed(spawn_error(program_name(inv), &e)),
                )
            }
        }
        // `expression` (holding our copies of the pipe's write end) is
        // dropped here, so the reader sees EOF when the command's side closes.
    };
    let pgid = handle
        .pids()
        .first()
        .and_then(|&pid| i32::try_from(pid).ok());
    let exit_fd = pgid.and_then(pidfd_open);
    let mut output = Some(reader);
    let mut lines = sink.line_buffer();

    let started = Instant::now();
    let command_deadline = inv.timeout.map(|t| started + t);
    let mut cancelled: Option<(Signal, Instant)> = None;
    // Without a pidfd: how long to wait before checking on the command.
    let mut check_every = Duration::from_millis(1);
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
            inv.build_deadline.map(|d| (d.at, Limit::Build(d.timeout))),
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
        for deadline in [
            command_deadline,
            inv.build_deadline.map(|d| d.at),
            cancelled.map(|c| c.1),
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(deadline);
        }
        if exit_fd.is_none() {
            wake = wake.min(now + check_every);
            check_every = (check_every * 2).min(WAKE_INTERVAL);
        }
        let (readable, exited) = wait_for(output.as_ref(), exit_fd.as_ref(), wake - now);
        if readable {
            if let Some(reader) = output.as_mut() {
                match lines.read_from(sink, reader) {
                    Ok(0) | Err(_) => {
                        let _ = lines.finish(sink);
                        output = None;
                    }
                    Ok(_) => {}
                }
            }
        }
        if exited || exit_fd.is_none() {
            match handle.try_wait() {
                Ok(Some(output)) => {
                    let status = output.status;
                    break match (cancelled, status.code(), status.signal()) {
                        (Some((signal, _)), _, _) => Finish::Cancelled(signal),
                        (None, Some(code), _) => Finish::Exited(code),
                        (None, None, Some(sig)) => Finish::Signaled(sig),
                        (None, None, None) => Finish::Exited(-1),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    kill_group(pgid);
                    break Finish::SpawnFailed(format!("lost track of the process: {e}"));
                }
            }
        }
    };
    drop(exit_fd);
    // Let the output drain; a background process may keep the pipe open, in
    // which case its further output still goes to the log as it comes.
    if let Some(reader) = output {
        drain(reader, lines, sink);
    } else {
        sink.recycle(lines);
    }
    (pgid, finish)
}

/// Bytes the output pipe holds (Linux's default is 64 KiB): a command
/// that prints a lot runs ahead while the sink writes the console and the
/// build log, instead of stopping every 64 KiB.
const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// Grows the pipe to [`PIPE_BYTES`]; a refusal (an unprivileged user over
/// `/proc/sys/fs/pipe-max-size`) leaves it as it is.
fn widen_pipe(reader: &PipeReader) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETPIPE_SZ on a pipe we own takes an int and touches no memory.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
}

/// Reads what the command left in the pipe until EOF, for up to
/// [`DRAIN_AFTER_EXIT`]; then hands the pipe to a thread that keeps copying
/// whatever background processes still write.
fn drain(mut reader: PipeReader, mut lines: LineBuffer, sink: &Arc<OutputSink>) {
    let until = Instant::now() + DRAIN_AFTER_EXIT;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let (readable, _) = wait_for(Some(&reader), None, until - now);
        if readable {
            match lines.read_from(sink, &mut reader) {
                Ok(0) | Err(_) => {
                    let _ = lines.finish(sink);
                    sink.recycle(lines);
                    return;
                }
                Ok(_) => {}
            }
        }
    }
    let sink = Arc::clone(sink);
    let spawned = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            while let Ok(n) = lines.read_from(&sink, &mut reader) {
                if n == 0 {
                    break;
                }
            }
            let _ = lines.finish(&sink);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot keep reading a background process's output: {e}");
    }
}

/// Waits up to `timeout` for output or the command's exit; returns which
/// happened (both false on timeout or interruption by a signal).
fn wait_for(
    output: Option<&PipeReader>,
    exit_fd: Option<&OwnedFd>,
    timeout: Duration,
) -> (bool, bool) {
    let mut fds: Vec<PollFd> = Vec::with_capacity(2);
    if let Some(reader) = output {
        fds.push(PollFd::new(reader.as_fd(), PollFlags::POLLIN));
    }
    if let Some(fd) = exit_fd {
        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
    }
    // Round up, so a deadline is never polled for early in a busy loop.
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    if fds.is_empty() {
        std::thread::sleep(Duration::from_millis(millis as u64));
        return (false, false);
    }
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => {
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let mut ready = fds.iter().map(ready);
            let readable = output.is_some() && ready.next().unwrap_or(false);
            let exited = exit_fd.is_some() && ready.next().unwrap_or(false);
            (readable, exited)
        }
        _ => (false, false),
    }
}

/// A pidfd for a child process: readable once it has exited. `None` where
/// the kernel (before 5.3) or a seccomp profile does not offer one.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The program to execute. A relative path with a separator (`./gradlew`,
/// `bin/tool`) names a file in the command's directory (the workspace or its
/// `workdir`), as it would in a shell there; duct would otherwise resolve it
/// against forgexec's own working directory.
fn program_path(program: &str, dir: &Path) -> OsString {
    let path = Path::new(program);
    if path.is_relative() && program.contains('/') {
        dir.join(path).into_os_string()
    } else {
        // A bare name is looked up on the command's PATH.
        OsString::from(program)
    }
}

fn program_name(inv: &Invocation) -> &str {
    inv.argv.first().map(String::as_str).unwrap_or_default()
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
pub fn signal_group(pgid: Option<i32>, signal: Signal) {
    if let Some(pgid) = pgid {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Kills a whole process group.
pub fn kill_group(pgid: Option<i32>) {
    signal_group(pgid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_output_pipe_is_widened() {
        let (reader, _writer) = os_pipe::pipe().expect("pipe");
        widen_pipe(&reader);
        // SAFETY: F_GETPIPE_SZ on our own pipe.
        let size = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(size, PIPE_BYTES);
    }
}
