//! A small GitHub-API-speaking HTTP/1.1 server on 127.0.0.1 for tests.
//!
//! std::net only, one thread per connection, keep-alive, Content-Length and
//! chunked request bodies. It records every request and answers the few
//! routes forgexec uses (commit statuses, zipball with its codeload redirect,
//! contents), checking the token like GitHub does. Faults (error statuses,
//! connection resets, delays) are scripted per route as a FIFO queue that the
//! next matching requests consume.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const DOCS: &str = "https://docs.github.com/rest";

/// The routes faults can be scripted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /repos/{owner}/{repo}/statuses/{sha}`
    Statuses,
    /// `GET /repos/{owner}/{repo}/zipball/{sha}` (the redirect)
    Zipball,
    /// `GET /codeload/{owner}/{repo}/legacy.zip/{sha}` (the bytes)
    Codeload,
    /// `GET /repos/{owner}/{repo}/contents/{path}`
    Contents,
    /// `POST /app/installations/{id}/access_tokens` (App mode)
    AccessTokens,
    /// `GET /repos/{owner}/{repo}/commits/{ref}/statuses`
    ListStatuses,
}

/// A GitHub App the server trusts: JWTs must be RS256-signed by the key
/// whose public half (PKCS#1 DER) is here, with `iss` the App id.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: u64,
    pub public_key_der: Vec<u8>,
    pub installation: u64,
}

/// An installation token the server issued, and what it was asked for.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub repositories: Vec<String>,
    pub permissions: Value,
    /// After this the token is refused (401 Bad credentials), as GitHub
    /// refuses an installation token an hour after it was issued.
    pub expires: SystemTime,
}

/// One scripted misbehaviour, consumed by the next request on its route.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, extra headers and body instead of the real
    /// answer (e.g. 502, 503, or 429 with `Retry-After: 1`).
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then close the socket without answering (with
    /// SO_LINGER 0, so the client sees a real TCP RST).
    Reset,
    /// Wait this long, then answer normally.
    Delay(Duration),
}

impl Fault {
    /// A plain error status with a GitHub-like JSON message body.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: json!({"message": reason(code), "documentation_url": DOCS}).to_string(),
        }
    }

    /// 429 with `Retry-After: <secs>`, like GitHub's secondary rate limit.
    pub fn rate_limited(retry_after_secs: u64) -> Fault {
        Fault::Status {
            code: 429,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Retry-After".into(), retry_after_secs.to_string()),
                ("X-RateLimit-Remaining".into(), "0".into()),
            ],
            body: json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": DOCS
            })
            .to_string(),
        }
    }
}

impl Fault {
    /// Any status with these headers and body (JSON unless the headers say
    /// otherwise).
    pub fn answer(code: u16, headers: &[(&str, &str)], body: &str) -> Fault {
        let mut all = vec![(
            "Content-Type".to_string(),
            "application/json; charset=utf-8".to_string(),
        )];
        all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        Fault::Status {
            code,
            headers: all,
            body: body.to_string(),
        }
    }

    /// GitHub's secondary rate limit (content-creating requests such as
    /// statuses, about 80 a minute): `code` 403 (sometimes 429) with
    /// `retry-after` (seconds, or any text to test its parsing); the primary
    /// limit's headers still show requests left.
    pub fn secondary_rate_limit(code: u16, retry_after: &str) -> Fault {
        Fault::answer(
            code,
            &[
                ("retry-after", retry_after),
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4987"),
                ("x-ratelimit-used", "13"),
                ("x-ratelimit-resource", "core"),
            ],
            &json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0400:1A2B:3C4D5E:6F7A8B:6752F0A1.",
                "documentation_url": "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                "status": code.to_string(),
            })
            .to_string(),
        )
    }

    /// GitHub's primary rate limit: `code` 403 (or 429) with
    /// `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (Unix seconds)
    /// `reset_in` from now.
    pub fn primary_rate_limit(code: u16, reset_in: Duration) -> Fault {
        let reset = (SystemTime::now() + reset_in)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        Fault::answer(
            code,
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-used", "5000"),
                ("x-ratelimit-reset", &reset),
                ("x-ratelimit-resource", "core"),
            ],
            &json!({
                "message": "API rate limit exceeded for installation ID 1234.",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
                "status": code.to_string(),
            })
            .to_string(),
        )
    }

    /// A 403 that is not a rate limit (the token lacks the permission).
    pub fn forbidden() -> Fault {
        Fault::answer(
            403,
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-used", "1"),
                ("x-ratelimit-resource", "core"),
            ],
            &json!({
                "message": "Resource not accessible by integration",
                "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status",
                "status": "403",
            })
            .to_string(),
        )
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, exactly as sent (e.g. `/repos/o/r/contents/a?ref=x`).
    pub target: String,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked bodies are de-chunked).
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// The route it matched, if any.
    pub route: Option<Route>,
    /// When its head and body had arrived.
    pub at: Instant,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    /// (sha, status JSON) in arrival order.
    statuses: Vec<(String, Value)>,
    zipball: Option<Vec<u8>>,
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<Route, VecDeque<Fault>>,
    /// Faults for statuses whose state is not `pending`, taken before the
    /// route's own.
    final_faults: VecDeque<Fault>,
    next_id: u64,
    app: Option<AppConfig>,
    issued: Vec<IssuedToken>,
    /// How long installation tokens live (GitHub: an hour).
    token_lifetime: Option<Duration>,
    /// Clones of open connections (by connection number), so Drop can close
    /// them; a connection removes its own entry when it ends.
    connections: HashMap<u64, TcpStream>,
    next_conn: u64,
}

struct Shared {
    token: String,
    /// `IP:PORT` the server is reached at (its own URLs name it).
    addr: SocketAddr,
    inner: Mutex<Inner>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking connection thread must not hide the recorded state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The test server. Dropping it stops accepting and closes open connections.
pub struct ForgeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ForgeServer {
    /// Starts on 127.0.0.1 with an ephemeral port; requests to `/repos/...`
    /// must carry `Authorization: Bearer <token>` or `token <token>`.
    pub fn start(token: &str) -> ForgeServer {
        ForgeServer::start_on(token, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// The same on `ip` (e.g. the host's address on a test network, for
    /// builds running in containers of other daemons).
    pub fn start_on(token: &str, ip: std::net::IpAddr) -> ForgeServer {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}:0 for ForgeServer: {e}"));
        let addr = listener.local_addr().expect("local_addr of ForgeServer");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            addr,
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("forge-server-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn ForgeServer accept thread");
        ForgeServer { addr, shared }
    }

    /// `http://IP:PORT` (no trailing slash): the API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The bytes served as the zipball of every sha.
    pub fn set_zipball(&self, bytes: Vec<u8>) {
        self.shared.lock().zipball = Some(bytes);
    }

    /// A file served by the contents API (path without leading slash).
    pub fn set_file(&self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.shared
            .lock()
            .files
            .insert(path.trim_start_matches('/').to_string(), bytes.into());
    }

    /// Queues a fault for the next request on `route` (FIFO).
    pub fn fault(&self, route: Route, fault: Fault) {
        self.shared
            .lock()
            .faults
            .entry(route)
            .or_default()
            .push_back(fault);
    }

    /// App mode: `POST /app/installations/{id}/access_tokens` checks the
    /// App's JWT and the request, and issues tokens that the other routes
    /// accept (for the requested repositories only).
    pub fn enable_app(&self, app: AppConfig) {
        self.shared.lock().app = Some(app);
    }

    /// Installation tokens issued from now on expire after `lifetime`
    /// instead of GitHub's hour.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = Some(lifetime);
    }

    /// The installation tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.lock().issued.clone()
    }

    /// Queues a fault for the next final (not `pending`) status (FIFO),
    /// whenever it comes.
    pub fn fault_final_status(&self, fault: Fault) {
        self.shared.lock().final_faults.push_back(fault);
    }

    /// Faults still queued for `route`.
    pub fn pending_faults(&self, route: Route) -> usize {
        self.shared.lock().faults.get(&route).map_or(0, |q| q.len())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The statuses accepted (201) for `sha`, in arrival order.
    pub fn statuses(&self, sha: &str) -> Vec<Value> {
        self.shared
            .lock()
            .statuses
            .iter()
            .filter(|(s, _)| s == sha)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every accepted status for any sha, in arrival order.
    pub fn all_statuses(&self) -> Vec<Value> {
        self.shared
            .lock()
            .statuses
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits until at least `n` statuses (any sha) were accepted and returns
    /// all of them; panics after `timeout` listing what did arrive.
    pub fn wait_for_statuses(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        while inner.statuses.len() < n {
            let now = Instant::now();
            if now >= deadline {
                let got: Vec<String> = inner
                    .statuses
                    .iter()
                    .map(|(sha, v)| format!("{sha}: {v}"))
                    .collect();
                let reqs: Vec<String> = inner
                    .requests
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.target))
                    .collect();
                panic!(
                    "ForgeServer: expected {n} statuses within {timeout:?}, got {}:\n{}\nrequests:\n{}",
                    got.len(),
                    got.join("\n"),
                    reqs.join("\n")
                );
            }
            inner = self
                .shared
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        inner.statuses.iter().map(|(_, v)| v.clone()).collect()
    }
}

impl Drop for ForgeServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        for (_, conn) in self.shared.lock().connections.drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let conn_id = {
            let mut inner = shared.lock();
            let id = inner.next_conn;
            inner.next_conn += 1;
            if let Ok(clone) = stream.try_clone() {
                inner.connections.insert(id, clone);
            }
            id
        };
        let conn_shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name("forge-server-conn".into())
            .spawn(move || {
                let _ = serve_connection(stream, &conn_shared, conn_id);
                // Drop our clone too, so the socket really closes (needed for
                // a Reset to reach the peer as RST).
                conn_shared.lock().connections.remove(&conn_id);
            });
    }
}

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(code: u16, body: Value) -> Response {
        Response {
            code,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.to_string().into_bytes(),
        }
    }
}

enum ReadError {
    /// Clean end of stream between requests.
    Closed,
    Io,
    Bad(String),
}

impl From<std::io::Error> for ReadError {
    fn from(_: std::io::Error) -> Self {
        ReadError::Io
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared, conn_id: u64) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(req) => req,
            Err(ReadError::Closed) | Err(ReadError::Io) => return Ok(()),
            Err(ReadError::Bad(msg)) => {
                let mut resp = Response::json(400, json!({ "message": msg }));
                resp.headers.push(("Connection".into(), "close".into()));
                write_response(&mut writer, &resp, "HTTP/1.1")?;
                return Ok(());
            }
        };
        let keep_alive = match req.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => req.version == "HTTP/1.1",
        };
        let route = route_of(&req);
        let json = serde_json::from_slice::<Value>(&req.body).ok();
        let fault = {
            let mut inner = shared.lock();
            inner.requests.push(RecordedRequest {
                method: req.method.clone(),
                target: req.target.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
                json: json.clone(),
                route: route.as_ref().map(|(r, _)| *r),
                at: Instant::now(),
            });
            let is_final_status = route.as_ref().is_some_and(|(r, _)| *r == Route::Statuses)
                && json
                    .as_ref()
                    .and_then(|j| j["state"].as_str())
                    .is_some_and(|state| state != "pending");
            let final_fault = if is_final_status {
                inner.final_faults.pop_front()
            } else {
                None
            };
            let fault = final_fault.or_else(|| {
                route
                    .as_ref()
                    .and_then(|(r, _)| inner.faults.get_mut(r)?.pop_front())
            });
            drop(inner);
            shared.changed.notify_all();
            fault
        };
        let mut resp = match fault {
            Some(Fault::Reset) => {
                set_linger_zero(&writer);
                shared.lock().connections.remove(&conn_id);
                // Returning drops the reader and writer: the last fds close
                // and the kernel sends RST.
                return Ok(());
            }
            Some(Fault::Status {
                code,
                headers,
                body,
            }) => Response {
                code,
                headers,
                body: body.into_bytes(),
            },
            Some(Fault::Delay(d)) => {
                thread::sleep(d);
                answer(&req, route, json, shared)
            }
            None => answer(&req, route, json, shared),
        };
        if req.method == "HEAD" {
            resp.body.clear();
        }
        resp.headers.push((
            "Connection".into(),
            if keep_alive { "keep-alive" } else { "close" }.into(),
        ));
        write_response(&mut writer, &resp, "HTTP/1.1")?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

/// SO_LINGER 0: closing the socket then sends a TCP RST instead of FIN.
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid, owned socket fd with a correctly sized
    // linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, limit: usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(limit as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if !line.ends_with(b"\n") {
        return Err(ReadError::Bad("line too long or truncated".into()));
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| ReadError::Bad("header is not UTF-8".into()))
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Request, ReadError> {
    let mut start = read_line(reader, 16 * 1024)?;
    // Tolerate stray empty lines between requests (RFC 9112 2.2).
    while start.is_empty() {
        start = read_line(reader, 16 * 1024)?;
    }
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("bad request line {start:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!("unsupported version {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        let line = match read_line(reader, 64 * 1024) {
            Err(ReadError::Closed) => return Err(ReadError::Bad("truncated headers".into())),
            other => other?,
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
        if headers.len() > 200 {
            return Err(ReadError::Bad("too many headers".into()));
        }
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(reader)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {len:?}")))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = match read_line(reader, 1024) {
            Err(ReadError::Closed) => return Err(ReadError::Bad("truncated chunk".into())),
            other => other?,
        };
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let t = match read_line(reader, 64 * 1024) {
                    Err(ReadError::Closed) => return Err(ReadError::Bad("truncated".into())),
                    other => other?,
                };
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Bad("chunk not followed by CRLF".into()));
        }
    }
}

fn write_response(w: &mut TcpStream, resp: &Response, version: &str) -> std::io::Result<()> {
    let mut head = format!("{version} {} {}\r\n", resp.code, reason(resp.code));
    head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
    head.push_str("Server: forge-test-server\r\n");
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
    let mut all = head.into_bytes();
    all.extend_from_slice(&resp.body);
    w.write_all(&all)?;
    w.flush()
}

/// The matched route and its path parameters.
fn route_of(req: &Request) -> Option<(Route, Vec<String>)> {
    let path = req.target.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["repos", owner, repo, "statuses", sha]) => Some((
            Route::Statuses,
            vec![owner.to_string(), repo.to_string(), sha.to_string()],
        )),
        ("GET" | "HEAD", ["repos", owner, repo, "zipball", sha]) => Some((
            Route::Zipball,
            vec![owner.to_string(), repo.to_string(), sha.to_string()],
        )),
        ("GET" | "HEAD", ["codeload", owner, repo, "legacy.zip", sha]) => Some((
            Route::Codeload,
            vec![owner.to_string(), repo.to_string(), sha.to_string()],
        )),
        ("GET", ["repos", owner, repo, "commits", sha, "statuses"]) => Some((
            Route::ListStatuses,
            vec![owner.to_string(), repo.to_string(), sha.to_string()],
        )),
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            Some((Route::AccessTokens, vec![id.to_string()]))
        }
        ("GET" | "HEAD", ["repos", owner, repo, "contents", rest @ ..]) if !rest.is_empty() => {
            Some((
                Route::Contents,
                vec![owner.to_string(), repo.to_string(), rest.join("/")],
            ))
        }
        _ => None,
    }
}

fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    target
        .split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn not_found() -> Response {
    Response::json(
        404,
        json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"}),
    )
}

/// The token of `Authorization: Bearer|token X`.
fn bearer(req: &Request) -> Option<&str> {
    let (scheme, given) = req.header("authorization")?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| given.trim())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why an App JWT is refused, or its claims.
fn check_jwt(jwt: &str, app: &AppConfig) -> Result<Value, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("not three dot-separated parts".into());
    };
    let header: Value =
        serde_json::from_slice(&base64url_decode(header)?).map_err(|e| format!("header: {e}"))?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let signature = base64url_decode(signature)?;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public_key_der,
    );
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    let claims: Value =
        serde_json::from_slice(&base64url_decode(claims)?).map_err(|e| format!("claims: {e}"))?;
    let now = unix_now();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if iat > now {
        return Err(format!("iat {iat} is in the future (now {now})"));
    }
    if exp <= now || exp > now + 600 || exp - iat > 660 {
        return Err(format!(
            "exp {exp} not within 10 minutes (iat {iat}, now {now})"
        ));
    }
    let iss = match &claims["iss"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err("no iss".into()),
    };
    if iss != app.id.to_string() {
        return Err(format!("iss {iss} is not the App {}", app.id));
    }
    Ok(claims)
}

fn access_token(
    req: &Request,
    params: &[String],
    json: Option<Value>,
    shared: &Shared,
) -> Response {
    let denied = |why: String| {
        Response::json(
            401,
            json!({"message": format!("A JSON web token could not be decoded: {why}"), "documentation_url": DOCS}),
        )
    };
    let Some(app) = shared.lock().app.clone() else {
        return not_found();
    };
    let Some(jwt) = bearer(req) else {
        return denied("no bearer token".into());
    };
    if let Err(why) = check_jwt(jwt, &app) {
        return denied(why);
    }
    if params[0] != app.installation.to_string() {
        return not_found();
    }
    let body = json.unwrap_or(Value::Null);
    let repositories: Vec<String> = body["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if repositories.len() != 1 {
        return Response::json(
            422,
            json!({"message": "the test forge wants exactly one repository", "documentation_url": DOCS}),
        );
    }
    if body["permissions"] != json!({"statuses": "write", "contents": "read"}) {
        return Response::json(
            422,
            json!({"message": format!("permissions {} are not statuses:write, contents:read", body["permissions"]), "documentation_url": DOCS}),
        );
    }
    let mut inner = shared.lock();
    let token = format!("ghs_test{}x{}", inner.issued.len(), fastrand::u64(..));
    let lifetime = inner.token_lifetime.unwrap_or(Duration::from_secs(3600));
    let expires = SystemTime::now() + lifetime;
    inner.issued.push(IssuedToken {
        token: token.clone(),
        repositories,
        permissions: body["permissions"].clone(),
        expires,
    });
    drop(inner);
    Response::json(
        201,
        json!({"token": token, "expires_at": iso8601(expires), "permissions": body["permissions"]}),
    )
}

/// Base64url without padding (JWT parts).
pub fn base64url_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(format!("bad base64url character {:?}", c as char)),
        })
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return Err("truncated base64url".into());
        }
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * (4 - chunk.len()) as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Ok(out)
}

fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req.header("authorization") else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        && given.trim() == token
}

fn answer(
    req: &Request,
    route: Option<(Route, Vec<String>)>,
    json: Option<Value>,
    shared: &Shared,
) -> Response {
    let Some((route, params)) = route else {
        return not_found();
    };
    if route == Route::AccessTokens {
        return access_token(req, &params, json, shared);
    }
    let repo_token = |token: &str| {
        let inner = shared.lock();
        let now = SystemTime::now();
        inner.issued.iter().any(|t| {
            t.token == token
                && params.len() > 1
                && t.repositories.contains(&params[1])
                && now < t.expires
        })
    };
    let issued_ok = bearer(req).is_some_and(repo_token);
    if route != Route::Codeload && !issued_ok && !authorized(req, &shared.token) {
        return Response::json(
            401,
            json!({"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}),
        );
    }
    match route {
        Route::Statuses => create_status(&params, json, shared),
        Route::ListStatuses => list_statuses(req, &params, shared),
        Route::AccessTokens => not_found(),
        Route::Zipball => {
            let (owner, repo, sha) = (&params[0], &params[1], &params[2]);
            Response {
                code: 302,
                headers: vec![(
                    "Location".into(),
                    format!(
                        "http://{}/codeload/{owner}/{repo}/legacy.zip/{sha}",
                        shared.addr
                    ),
                )],
                body: Vec::new(),
            }
        }
        Route::Codeload => match shared.lock().zipball.clone() {
            Some(bytes) => {
                let (repo, sha) = (&params[1], &params[2]);
                Response {
                    code: 200,
                    headers: vec![
                        ("Content-Type".into(), "application/zip".into()),
                        (
                            "Content-Disposition".into(),
                            format!("attachment; filename={repo}-{sha}.zip"),
                        ),
                    ],
                    body: bytes,
                }
            }
            None => not_found(),
        },
        Route::Contents => {
            let (owner, repo, path) = (&params[0], &params[1], &params[2]);
            let Some(bytes) = shared.lock().files.get(path.as_str()).cloned() else {
                return not_found();
            };
            let git_ref = query_param(&req.target, "ref").unwrap_or("main");
            let name = path.rsplit('/').next().unwrap_or(path);
            let base = format!("http://{}", shared.addr);
            Response::json(
                200,
                json!({
                    "type": "file",
                    "encoding": "base64",
                    "size": bytes.len(),
                    "name": name,
                    "path": path,
                    "content": github_base64(&bytes),
                    "url": format!("{base}/repos/{owner}/{repo}/contents/{path}?ref={git_ref}"),
                    "download_url": format!("{base}/raw/{owner}/{repo}/{git_ref}/{path}"),
                }),
            )
        }
    }
}

fn validation_failed(field: &str, message: &str) -> Response {
    Response::json(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": "Status", "code": "custom", "field": field, "message": message}],
            "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status",
            "status": "422"
        }),
    )
}

fn create_status(params: &[String], json: Option<Value>, shared: &Shared) -> Response {
    let (owner, repo, sha) = (&params[0], &params[1], &params[2]);
    let Some(Value::Object(body)) = json else {
        return Response::json(
            400,
            json!({"message": "Problems parsing JSON", "documentation_url": DOCS, "status": "400"}),
        );
    };
    let state = body.get("state").and_then(Value::as_str).unwrap_or("");
    if !["pending", "success", "failure", "error"].contains(&state) {
        return validation_failed("state", "state is not included in the list");
    }
    let description = match body.get("description") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.chars().count() > 140 => {
            return validation_failed(
                "description",
                "description is too long (maximum is 140 characters)",
            )
        }
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(_) => return validation_failed("description", "description is not a string"),
    };
    let target_url = match body.get("target_url") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(_) => return validation_failed("target_url", "target_url is not a string"),
    };
    let context = match body.get("context") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return validation_failed("context", "context is not a string"),
    };
    let now = iso8601(SystemTime::now());
    let mut inner = shared.lock();
    let id = inner.next_id;
    inner.next_id += 1;
    let base = format!("http://{}", shared.addr);
    let status = json!({
        "url": format!("{base}/repos/{owner}/{repo}/statuses/{sha}"),
        "avatar_url": Value::Null,
        "id": id,
        "node_id": format!("SC_test{id}"),
        "state": state,
        "description": description,
        "target_url": target_url,
        "context": context,
        "created_at": now,
        "updated_at": now,
        "creator": {"login": "forge-test-bot", "id": 1, "type": "Bot"},
    });
    inner.statuses.push((sha.clone(), status.clone()));
    drop(inner);
    shared.changed.notify_all();
    Response::json(201, status)
}

/// A commit's statuses, newest first, as GitHub lists them (`per_page` up
/// to 100, default 30; only the first page).
fn list_statuses(req: &Request, params: &[String], shared: &Shared) -> Response {
    let per_page = query_param(&req.target, "per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let inner = shared.lock();
    let newest_first: Vec<Value> = inner
        .statuses
        .iter()
        .rev()
        .filter(|(sha, _)| *sha == params[2])
        .map(|(_, status)| status.clone())
        .take(per_page)
        .collect();
    Response::json(200, Value::Array(newest_first))
}

/// Base64 with a newline after every 60 output characters, as GitHub's
/// contents API returns it.
pub fn github_base64(bytes: &[u8]) -> String {
    let plain = base64(bytes);
    let mut out = String::with_capacity(plain.len() + plain.len() / 60 + 1);
    for (i, c) in plain.chars().enumerate() {
        if i > 0 && i % 60 == 0 {
            out.push('\n');
        }
        out.push(c);
    }
    out.push('\n');
    out
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}
