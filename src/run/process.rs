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
    let child = match Child::spawn(inv) {
        Ok(child) => child,
        Err(why) => return (None, Finish::SpawnFailed(why)),
    };
    let pgid = child.pgid;
    let (finish, output, lines) = child.watch(inv, sink, cancel);
    // Let the output drain; a background process may keep the pipe open, in
    // which case its further output still goes to the log as it comes.
    match output {
        Some(reader) => drain(reader, lines, sink),
        None => sink.recycle(lines),
    }
    (pgid, finish)
}

/// A started command: duct's handle, its process group and output pipe.
struct Child {
    handle: duct::Handle,
    pgid: Option<i32>,
    output: PipeReader,
}

impl Child {
    /// Starts the command in its own process group, stdout and stderr into
    /// one pipe; says why when it cannot start.
    fn spawn(inv: &Invocation) -> Result<Child, String> {
        let (program, args) = inv.argv.split_first().ok_or("empty command")?;
        check_start(program, &inv.dir, &inv.env)?;
        let (reader, writer) = os_pipe::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        widen_pipe(&reader);
        let writer_for_stderr = writer
            .try_clone()
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        let expression = duct::cmd(program_path(program, &inv.dir), args)
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
        let handle = expression.start().map_err(|e| spawn_error(program, &e))?;
        // `expression` (holding our copies of the pipe's write end) is
        // dropped here, so the reader sees EOF when the command's side closes.
        drop(expression);
        let pgid = handle
            .pids()
            .first()
            .and_then(|&pid| i32::try_from(pid).ok());
        Ok(Child {
            handle,
            pgid,
            output: reader,
        })
    }

    /// Pumps the output and waits for the exit, a deadline or the
    /// cancellation. Returns how it finished, the pipe if it is still open,
    /// and the line buffer.
    fn watch(
        self,
        inv: &Invocation,
        sink: &Arc<OutputSink>,
        cancel: &Cancellation,
    ) -> (Finish, Option<PipeReader>, LineBuffer) {
        let Child {
            handle,
            pgid,
            output,
        } = self;
        let exit_fd = pgid.and_then(pidfd_open);
        let mut output = Some(output);
        let mut lines = sink.line_buffer();
        let command_deadline = inv.timeout.map(|t| Instant::now() + t);
        let mut cancelled: Option<(Signal, Instant)> = None;
        // Without a pidfd: how long to wait before checking on the command.
        let mut check_every = Duration::from_millis(1);
        let finish = loop {
            let now = Instant::now();
            if cancelled.is_none() {
                if let Some(signal) = cancel.signal() {
                    // Forward the cancellation to the command's group and give
                    // it the grace period to shut down cleanly.
                    signal_group(pgid, signal);
                    cancelled = Some((signal, now + cancel.grace()));
                }
            }
            if let Some(limit) = limit_reached(inv, command_deadline, now) {
                if cancelled.is_none() {
                    kill_group(pgid);
                    let _ = handle.wait();
                    break Finish::TimedOut(limit);
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
                    Ok(Some(done)) => break exit_finish(cancelled.map(|c| c.0), done.status),
                    Ok(None) => {}
                    Err(e) => {
                        kill_group(pgid);
                        break Finish::SpawnFailed(format!("lost track of the process: {e}"));
                    }
                }
            }
        };
        (finish, output, lines)
    }
}

/// The first of the command's and the build's deadlines that has passed.
fn limit_reached(
    inv: &Invocation,
    command_deadline: Option<Instant>,
    now: Instant,
) -> Option<Limit> {
    let limits = [
        command_deadline.map(|d| (d, Limit::Command(inv.timeout.unwrap_or_default()))),
        inv.build_deadline.map(|d| (d.at, Limit::Build(d.timeout))),
    ];
    limits
        .into_iter()
        .flatten()
        .filter(|(d, _)| *d <= now)
        .min_by_key(|(d, _)| *d)
        .map(|(_, limit)| limit)
}

/// How a command that exited finished.
fn exit_finish(cancelled: Option<Signal>, status: std::process::ExitStatus) -> Finish {
    match (cancelled, status.code(), status.signal()) {
        (Some(signal), _, _) => Finish::Cancelled(signal),
        (None, Some(code), _) => Finish::Exited(code),
        (None, None, Some(sig)) => Finish::Signaled(sig),
        (None, None, None) => Finish::Exited(-1),
    }
}

/// Why a command cannot start, told apart before trying: a missing working
/// folder, a missing shell, and a missing program are different mistakes.
fn check_start(program: &str, dir: &Path, env: &[(OsString, OsString)]) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!(
            "its working folder {} does not exist (check `workdir:`)",
            dir.display()
        ));
    }
    if program == super::SHELL && !Path::new(program).exists() {
        return Err(format!(
            "the image has no {program} for the shell form; install a shell or write the command as a list (exec form)"
        ));
    }
    let path = Path::new(program);
    if program.contains('/') {
        let file = if path.is_relative() {
            dir.join(path)
        } else {
            path.to_path_buf()
        };
        if !file.exists() {
            return Err(format!(
                "`{program}` not found: {} does not exist",
                file.display()
            ));
        }
        return Ok(());
    }
    let search = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let found = std::env::split_paths(&search).any(|d| d.join(program).is_file());
    if found {
        Ok(())
    } else {
        Err(format!(
            "`{program}` not found on PATH ({}); is it installed in the image?",
            search.to_string_lossy()
        ))
    }
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
    fn a_command_that_cannot_start_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        let missing_dir = dir.path().join("sub");
        let err = check_start("ls", &missing_dir, &env).unwrap_err();
        assert!(
            err.contains("working folder") && err.contains("sub"),
            "{err}"
        );
        let err = check_start("no-such-tool-xyz", dir.path(), &env).unwrap_err();
        assert!(
            err.starts_with("`no-such-tool-xyz` not found on PATH (/usr/bin:/bin)"),
            "{err}"
        );
        let err = check_start("./gradlew", dir.path(), &env).unwrap_err();
        assert!(
            err.contains("gradlew") && err.contains("does not exist"),
            "{err}"
        );
        assert_eq!(check_start("ls", dir.path(), &env), Ok(()));
        // The shell's own message, where the image has none, is checked
        // against the real path: here /bin/sh exists, so it starts.
        assert_eq!(check_start(super::super::SHELL, dir.path(), &env), Ok(()));
    }

    #[test]
    fn the_output_pipe_is_widened() {
        let (reader, _writer) = os_pipe::pipe().expect("pipe");
        widen_pipe(&reader);
        // SAFETY: F_GETPIPE_SZ on our own pipe.
        let size = unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(size, PIPE_BYTES);
    }
}
