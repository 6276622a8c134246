//! `forgexec sidecar`: the entrypoint the launcher gives each sidecar
//! container. It runs the service's own command as its child (signals
//! forwarded, its output still on the container's stdout and stderr, its
//! exit code the container's), keeps the last [`TAIL_LINES`] lines of that
//! output, and serves them with the service's state on an abstract unix
//! socket ([`super::wire`]) in the network namespace it shares with the
//! build. As PID 1 it also reaps orphans. The service's output is not
//! masked here: the build's forgexec masks what it writes to the build log.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::wire::{self, Line, Report, State, MAX_LINE, MAX_REQUEST, TAIL_LINES};

/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;
/// How long a request line and the writing of an answer may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// After the service exits: how long the wrapper stays to tell a build
/// that has not asked yet.
const LINGER: Duration = Duration::from_secs(5);
/// After the service exits: how long its output pipes may stay open
/// (held by processes it left behind) before its state is published.
const DRAIN: Duration = Duration::from_secs(1);
/// Exit code when the command cannot be started (as a shell says).
const NOT_STARTED: u8 = 127;

/// The shared state: the last lines and whether the service still runs.
#[derive(Default)]
struct Shared {
    tail: Mutex<Tail>,
    changed: Condvar,
    /// Watchers told of the exit.
    told: AtomicUsize,
    connections: AtomicUsize,
}

struct Tail {
    lines: VecDeque<Line>,
    state: State,
    /// Output readers still reading.
    readers: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            lines: VecDeque::with_capacity(TAIL_LINES),
            state: State::Running,
            readers: 0,
        }
    }
}

impl Tail {
    fn push(&mut self, line: Line) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn report(&self) -> Report {
        Report {
            state: self.state,
            lines: self.lines.iter().cloned().collect(),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `argv` as service `name` of build `build_id`; returns its exit code.
pub fn run(build_id: &str, name: &str, argv: &[OsString]) -> u8 {
    let shared = Arc::new(Shared::default());
    // Before any thread: the signals are taken with sigwait below, the
    // child gets a clear mask (std resets it).
    let mut watched = SigSet::empty();
    watched.add(Signal::SIGCHLD);
    for signal in crate::init::FORWARDED {
        watched.add(signal);
    }
    if let Err(err) = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&watched), None)
    {
        eprintln!("forgexec sidecar: cannot take signals: {err}");
    }
    let socket = wire::socket_name(build_id, name);
    match wire::address(&socket).and_then(|a| UnixListener::bind_addr(&a)) {
        Ok(listener) => {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(listener, shared));
        }
        // The service runs all the same; the build reports no output.
        Err(err) => eprintln!("forgexec sidecar: cannot listen on @{socket}: {err}"),
    }
    let (code, stopped) = match start(argv, &shared) {
        Ok(child) => supervise(child, &watched),
        Err(message) => {
            eprintln!("{message}");
            shared.lock().push(Line {
                text: message.into_bytes(),
                cut: false,
            });
            (i32::from(NOT_STARTED), false)
        }
    };
    // Stopped (docker stop, a removal): no one to wait for.
    finish(&shared, code, if stopped { Duration::ZERO } else { LINGER });
    u8::try_from(code).unwrap_or(1)
}

/// Starts the service with its output piped through readers that copy it
/// to ours and keep its last lines. Returns the child's pid.
fn start(argv: &[OsString], shared: &Arc<Shared>) -> Result<Pid, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("forgexec sidecar: the service has no command (image without ENTRYPOINT or CMD, and none in .forge.yml)".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "forgexec sidecar: cannot run `{}`: {e}",
                program.to_string_lossy()
            )
        })?;
    let pid = Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().map(|o| Box::new(o) as Source);
    let stderr = child.stderr.take().map(|o| Box::new(o) as Source);
    let outputs: [(Option<Source>, Sink); 2] = [
        (stdout, Box::new(io::stdout())),
        (stderr, Box::new(io::stderr())),
    ];
    for (source, out) in outputs {
        let Some(source) = source else { continue };
        shared.lock().readers += 1;
        let shared = Arc::clone(shared);
        std::thread::spawn(move || copy_output(source, out, &shared));
    }
    // Reaped by pid in `supervise`, not through `Child`.
    drop(child);
    Ok(pid)
}

type Source = Box<dyn Read + Send>;
type Sink = Box<dyn Write + Send>;

/// Copies one output stream to `out` and keeps its complete lines.
fn copy_output(mut source: Source, mut out: Sink, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
        let mut done: Vec<Line> = Vec::new();
        for &byte in &buf[..n] {
            if byte == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                done.push(Line {
                    text: std::mem::take(&mut line),
                    cut: std::mem::take(&mut cut),
                });
            } else if line.len() < MAX_LINE {
                line.push(byte);
            } else {
                cut = true;
            }
        }
        if !done.is_empty() {
            let mut tail = shared.lock();
            for line in done.into_iter().rev().take(TAIL_LINES).rev() {
                tail.push(line);
            }
        }
    }
    let mut tail = shared.lock();
    if !line.is_empty() {
        tail.push(Line { text: line, cut });
    }
    tail.readers -= 1;
    shared.changed.notify_all();
}

/// Forwards signals to the service and reaps children until it exits;
/// returns its exit code (128 + N for signal N) and whether it was asked to
/// stop (a termination signal was forwarded).
fn supervise(child: Pid, watched: &SigSet) -> (i32, bool) {
    let mut stopped = false;
    loop {
        match watched.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => return (code, stopped),
                    Ok(WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                        return (128 + signal as i32, stopped)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(signal) => {
                stopped |= crate::run::cancel::CANCEL_SIGNALS.contains(&signal);
                let _ = kill(child, signal);
            }
            Err(_) => {}
        }
    }
}

/// The service exited: lets its output drain (bounded), publishes the
/// exit, and stays up to `linger` for a build that has not asked yet.
fn finish(shared: &Shared, code: i32, linger: Duration) {
    let drained = Instant::now() + DRAIN;
    let mut tail = shared.lock();
    while tail.readers > 0 {
        let left = drained.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tail = shared
            .changed
            .wait_timeout(tail, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    tail.state = State::Exited(code);
    shared.changed.notify_all();
    let linger = Instant::now() + linger;
    while shared.told.load(Ordering::SeqCst) == 0 {
        let left = linger.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tail = shared
            .changed
            .wait_timeout(tail, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _ = answer(stream, &shared);
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Answers one request: `tail` at once, `watch` when the service has
/// exited (or never, when the asker hangs up first).
fn answer(mut stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(MAX_REQUEST);
    let mut byte = [0u8; 1];
    while request.len() < MAX_REQUEST {
        if stream.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        request.push(byte[0]);
    }
    let report = match &request[..] {
        b"tail" => shared.lock().report(),
        b"watch" => match watch(&stream, shared)? {
            Some(report) => report,
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    stream.write_all(&report.encode())?;
    if matches!(report.state, State::Exited(_)) {
        shared.told.fetch_add(1, Ordering::SeqCst);
        shared.changed.notify_all();
    }
    Ok(())
}

/// Waits for the exit; `None` when the asker hung up first.
fn watch(stream: &UnixStream, shared: &Shared) -> io::Result<Option<Report>> {
    let mut tail = shared.lock();
    loop {
        if matches!(tail.state, State::Exited(_)) {
            return Ok(Some(tail.report()));
        }
        tail = shared
            .changed
            .wait_timeout(tail, Duration::from_secs(1))
            .unwrap_or_else(|e| e.into_inner())
            .0;
        drop(tail);
        if hung_up(stream) {
            return Ok(None);
        }
        tail = shared.lock();
    }
}

/// Whether the other end closed its side (checked without blocking; a
/// byte it sent after its request is dropped).
fn hung_up(mut stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => {
            let mut byte = [0u8; 1];
            !matches!(stream.read(&mut byte), Ok(1))
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_are_kept_and_long_ones_are_cut() {
        let shared = Shared::default();
        shared.lock().readers = 1;
        let mut output = Vec::new();
        for i in 0..(TAIL_LINES + 10) {
            output.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        output.extend(std::iter::repeat_n(b'y', MAX_LINE + 5));
        output.extend_from_slice(b"\nno newline");
        copy_output(
            Box::new(io::Cursor::new(output)),
            Box::new(io::sink()),
            &shared,
        );
        let tail = shared.lock();
        assert_eq!(tail.lines.len(), TAIL_LINES);
        assert_eq!(tail.readers, 0);
        let last: Vec<&Line> = tail.lines.iter().rev().take(3).collect();
        assert_eq!(last[0].text, b"no newline");
        assert!(last[1].cut && last[1].text.len() == MAX_LINE);
        assert_eq!(last[2].text, format!("line {}", TAIL_LINES + 9).as_bytes());
        assert!(!last[2].cut);
    }

    #[test]
    fn a_build_asks_for_the_tail_and_learns_of_the_exit() {
        let shared = Arc::new(Shared::default());
        shared.lock().push(Line {
            text: b"listening".to_vec(),
            cut: false,
        });
        let name = wire::socket_name(&format!("unit-{}", std::process::id()), "db");
        let listener = UnixListener::bind_addr(&wire::address(&name).expect("name")).expect("bind");
        std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || serve(listener, shared)
        });
        let now = wire::tail(&name, Duration::from_secs(2)).expect("tail");
        assert_eq!(now.state, State::Running);
        assert_eq!(now.lines[0].text, b"listening");

        let mut watcher = wire::request(&name, "watch").expect("watch");
        std::thread::sleep(Duration::from_millis(50));
        finish_with(&shared, 7);
        let exited =
            wire::read_answer(&mut watcher, Vec::new(), Duration::from_secs(3)).expect("exit");
        assert_eq!(exited.state, State::Exited(7));
        assert_eq!(shared.told.load(Ordering::SeqCst), 1);
    }

    fn finish_with(shared: &Arc<Shared>, code: i32) {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || finish(&shared, code, LINGER));
    }
}
