//! What a sidecar's wrapper (`forgexec sidecar`) and the build's forgexec
//! say to each other over a Linux abstract unix socket. Abstract names
//! belong to a network namespace, which the build and its sidecars share:
//! nothing to mount, nothing left on disk. The build sends one request
//! line; the wrapper answers with a header and the last lines of the
//! service's output, then closes:
//!
//! ```text
//! -> tail\n            (now)   or   watch\n   (once the service has exited)
//! <- forge-sidecar 1 running\n   |   forge-sidecar 1 exited 7\n
//! <- |a whole line\n
//! <- +the first MAX_LINE bytes of a longer line\n
//! ```
//!
//! Everything read is bounded: lines, their number, the bytes and the time.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::{Duration, Instant};

/// Lines of a service's output kept and reported.
pub const TAIL_LINES: usize = 50;
/// Longest line kept; the rest of a longer line is dropped (and said so).
pub const MAX_LINE: usize = 2048;
/// Longest request line.
pub const MAX_REQUEST: usize = 16;
const HEADER: &str = "forge-sidecar 1 ";
/// Longest answer: a header and [`TAIL_LINES`] lines of [`MAX_LINE`] bytes.
pub const MAX_ANSWER: usize = 64 + TAIL_LINES * (MAX_LINE + 2);

/// The abstract socket of service `service` of build `build_id` (two builds
/// on the host's network must not meet).
pub fn socket_name(build_id: &str, service: &str) -> String {
    let name = format!("forge-sidecar/{build_id}/{service}");
    // An abstract name has at most 107 bytes; ids and names are shorter in
    // practice, a checksum keeps longer ones distinct.
    if name.len() <= 100 {
        name
    } else {
        format!("forge-sidecar/{:08x}", crc32fast::hash(name.as_bytes()))
    }
}

pub fn address(name: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Whether the service still runs, and its exit code when not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Exited(i32),
}

/// One line of output; `cut` when only its first [`MAX_LINE`] bytes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: Vec<u8>,
    pub cut: bool,
}

/// A service's state and its last lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    pub lines: Vec<Line>,
}

impl Report {
    /// The answer's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(HEADER.as_bytes());
        match self.state {
            State::Running => out.extend_from_slice(b"running\n"),
            State::Exited(code) => out.extend_from_slice(format!("exited {code}\n").as_bytes()),
        }
        for line in self.lines.iter().rev().take(TAIL_LINES).rev() {
            out.push(if line.cut { b'+' } else { b'|' });
            out.extend_from_slice(&line.text[..line.text.len().min(MAX_LINE)]);
            out.push(b'\n');
        }
        out
    }

    /// Parses an answer; lines beyond the limits are dropped or cut.
    pub fn decode(bytes: &[u8]) -> Result<Report, ServiceLogError> {
        let mut lines = bytes.split(|&b| b == b'\n');
        let header = lines.next().unwrap_or_default();
        let state = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix(HEADER))
            .and_then(|rest| match rest.split_once(' ') {
                None if rest == "running" => Some(State::Running),
                Some(("exited", code)) => code.parse().ok().map(State::Exited),
                _ => None,
            })
            .ok_or(ServiceLogError::Malformed)?;
        let mut parsed: Vec<Line> = Vec::new();
        for line in lines {
            let Some((&kind, text)) = line.split_first() else {
                continue;
            };
            let cut = kind == b'+' || text.len() > MAX_LINE;
            parsed.push(Line {
                text: text[..text.len().min(MAX_LINE)].to_vec(),
                cut,
            });
        }
        let skip = parsed.len().saturating_sub(TAIL_LINES);
        parsed.drain(..skip);
        Ok(Report {
            state,
            lines: parsed,
        })
    }
}

/// Why a service's output could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ServiceLogError {
    #[error("nothing answers for it (not started yet, or gone)")]
    Unreachable(#[source] io::Error),
    #[error("reading its output failed")]
    Io(#[source] io::Error),
    #[error("its answer took longer than {}s", .0.as_secs())]
    TooSlow(Duration),
    #[error("its answer is not understood")]
    Malformed,
    #[error("its wrapper closed the connection without an answer")]
    NoAnswer,
}

/// Connects to the abstract socket `name` without blocking: a listener
/// whose backlog is full (one that never accepts) fails the connect with
/// `WouldBlock` instead of holding it for ever, which std's connect would.
fn connect(name: &str) -> io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let bytes = name.as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() + 1 > addr.sun_path.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: an abstract name.
    for (slot, byte) in addr.sun_path[1..].iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len();
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Connects to `name` and sends `request` (`tail` or `watch`).
pub fn request(name: &str, request: &str) -> Result<UnixStream, ServiceLogError> {
    let mut stream = connect(name).map_err(ServiceLogError::Unreachable)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .map_err(ServiceLogError::Io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(ServiceLogError::Io)?;
    Ok(stream)
}

/// Reads an answer to its end, at most [`MAX_ANSWER`] bytes (the rest is
/// not read) and within `within` of the first byte `first` (already read,
/// if any).
pub fn read_answer(
    stream: &mut UnixStream,
    mut answer: Vec<u8>,
    within: Duration,
) -> Result<Report, ServiceLogError> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 8192];
    while answer.len() < MAX_ANSWER {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ServiceLogError::TooSlow(within));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(ServiceLogError::Io)?;
        let room = (MAX_ANSWER - answer.len()).min(buf.len());
        match stream.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => return Err(ServiceLogError::TooSlow(within)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ServiceLogError::Io(e)),
        }
    }
    if answer.is_empty() {
        return Err(ServiceLogError::NoAnswer);
    }
    Report::decode(&answer)
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The service's state and last lines now, within `within`.
pub fn tail(name: &str, within: Duration) -> Result<Report, ServiceLogError> {
    let mut stream = request(name, "tail")?;
    read_answer(&mut stream, Vec::new(), within)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, cut: bool) -> Line {
        Line {
            text: text.as_bytes().to_vec(),
            cut,
        }
    }

    #[test]
    fn an_answer_round_trips() {
        let report = Report {
            state: State::Exited(7),
            lines: vec![line("ready", false), line("long", true), line("", false)],
        };
        let bytes = report.encode();
        assert!(bytes.starts_with(b"forge-sidecar 1 exited 7\n|ready\n+long\n|\n"));
        assert_eq!(Report::decode(&bytes).expect("decodes"), report);
    }

    #[test]
    fn a_hostile_answer_is_bounded_or_refused() {
        assert!(matches!(
            Report::decode(b"HTTP/1.1 200 OK\n"),
            Err(ServiceLogError::Malformed)
        ));
        let mut flood = b"forge-sidecar 1 running\n".to_vec();
        for _ in 0..TAIL_LINES * 3 {
            flood.push(b'|');
            flood.extend(std::iter::repeat_n(b'x', MAX_LINE * 2));
            flood.push(b'\n');
        }
        let report = Report::decode(&flood).expect("decodes");
        assert_eq!(report.lines.len(), TAIL_LINES);
        assert!(report
            .lines
            .iter()
            .all(|l| l.cut && l.text.len() == MAX_LINE));
    }

    #[test]
    fn socket_names_fit_and_stay_distinct() {
        assert_eq!(
            socket_name("20261207T014000123-ab12", "db"),
            "forge-sidecar/20261207T014000123-ab12/db"
        );
        let long = "x".repeat(200);
        let a = socket_name(&long, "db");
        let b = socket_name(&long, "web");
        assert!(a.len() <= 100 && a != b);
    }

    #[test]
    fn a_wrapper_that_never_answers_costs_a_bounded_wait() {
        let name = socket_name(&format!("silent-{}", std::process::id()), "db");
        let _listener = std::os::unix::net::UnixListener::bind_addr(&address(&name).expect("name"))
            .expect("bind");
        let started = Instant::now();
        let err = tail(&name, Duration::from_millis(300)).expect_err("no answer");
        assert!(matches!(err, ServiceLogError::TooSlow(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            tail(&socket_name("nobody", "db"), Duration::from_secs(1)),
            Err(ServiceLogError::Unreachable(_))
        ));
    }

    #[test]
    fn a_listener_that_never_accepts_cannot_hold_a_connect() {
        let name = socket_name(&format!("full-{}", std::process::id()), "db");
        let _listener = std::os::unix::net::UnixListener::bind_addr(&address(&name).expect("name"))
            .expect("bind");
        // Fill its backlog; the connect after that fails at once.
        let mut held = Vec::new();
        let err = loop {
            match connect(&name) {
                Ok(stream) => held.push(stream),
                Err(err) => break err,
            }
            assert!(held.len() < 100_000, "the backlog never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }
}
