//! `forge-launch serve` against the real Docker daemon (single-node swarm),
//! the real static forgexec and the forge test server acting as GitHub
//! (with a GitHub App whose JWTs it verifies with the App's public key).
//! Deliveries are GitHub's own example payloads (tests/fixtures/webhooks,
//! from octokit/webhooks), rewritten to name the test repository and
//! commit, signed with the webhook secret and POSTed over real HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::forge_server::AppConfig;
use crate::common::{docker, run_ok, static_forgexec, unique_name};
use crate::launch_swarm::{guard_all, launcher, states, Fixture, OWNER, PASSING};

const SECRET: &str = "It's a Secret to Everybody";
const APP_ID: u64 = 4242;
const INSTALLATION: u64 = 977;

/// A build that runs until it is stopped.
const SLOW: &str = "\
execute:
  - echo started
  - sleep 120
";

fn fixture_payload(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture payloads are JSON")
}

/// Points a GitHub example payload at the test repository.
fn retarget(payload: &mut Value, fx: &Fixture) {
    let full = format!("{OWNER}/{}", fx.repo);
    for pointer in [
        "/repository",
        "/pull_request/base/repo",
        "/pull_request/head/repo",
    ] {
        if let Some(repo) = payload.pointer_mut(pointer) {
            repo["name"] = fx.repo.clone().into();
            repo["full_name"] = full.clone().into();
            repo["owner"]["login"] = OWNER.into();
            repo["owner"]["name"] = OWNER.into();
        }
    }
    payload["installation"]["id"] = INSTALLATION.into();
}

/// A `pull_request` delivery of `action` for pull request `number` at `sha`.
fn pull_request(fx: &Fixture, action: &str, number: u64, sha: &str) -> Vec<u8> {
    let file = match action {
        "opened" => "pull_request-opened.json",
        "synchronize" => "pull_request-synchronize.json",
        "closed" => "pull_request-closed.json",
        "reopened" => "pull_request-reopened.json",
        other => panic!("no fixture for {other}"),
    };
    let mut p = fixture_payload(file);
    retarget(&mut p, fx);
    p["number"] = number.into();
    p["pull_request"]["number"] = number.into();
    p["pull_request"]["head"]["sha"] = sha.into();
    p.to_string().into_bytes()
}

/// A `push` delivery of `sha` to `branch`.
fn push(fx: &Fixture, branch: &str, sha: &str) -> Vec<u8> {
    let mut p = fixture_payload("push-with-installation.json");
    retarget(&mut p, fx);
    p["ref"] = format!("refs/heads/{branch}").into();
    p["after"] = sha.into();
    p["deleted"] = false.into();
    p["created"] = false.into();
    p.to_string().into_bytes()
}

fn sign(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    code: u16,
    body: String,
}

/// Sends one raw HTTP/1.1 request (Connection: close) and reads the answer.
fn http(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) before the whole body is sent.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Answer { code, body }
}

/// A running `forge-launch serve`; killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Serve {
    /// serve with the fixture's forge as API, the GitHub App, host
    /// networking and `extra` flags.
    fn start(fx: &Fixture, app: &TestApp, extra: &[&str]) -> Serve {
        let (cmd, dir) = Serve::command(fx, app, extra);
        Serve::spawn(cmd, dir)
    }

    /// The command [`Serve::start`] runs, and the directory of its files.
    fn command(fx: &Fixture, app: &TestApp, extra: &[&str]) -> (Command, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let mut cmd = Command::new(launcher());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--webhook-secret-file")
            .arg(&secret)
            .args(["--app-id", &APP_ID.to_string()])
            .arg("--app-key-file")
            .arg(&app.key_file)
            .args(["--api-url", &fx.forge.url()])
            .arg("--forgexec")
            .arg(static_forgexec())
            .args(["--network", "host", "--start-timeout", "60s"])
            .args(extra)
            .env("RUST_LOG", "forgexec=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        (cmd, dir)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Serve {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("serve logs its address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not say where it listens within 30 s:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Serve {
            child,
            addr,
            log,
            dir,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// POSTs a delivery with the given headers.
    fn post_raw(&self, event: &str, delivery: &str, extra_headers: &str, body: &[u8]) -> Answer {
        let head = format!(
            "POST /webhook HTTP/1.1\r\nHost: serve\r\nUser-Agent: GitHub-Hookshot/test\r\n\
             X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n{extra_headers}\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        http(self.addr, &head, body)
    }

    /// POSTs a correctly signed JSON delivery.
    fn deliver(&self, event: &str, delivery: &str, body: &[u8]) -> Answer {
        let headers = format!(
            "Content-Type: application/json\r\nX-Hub-Signature-256: {}\r\n",
            sign(body)
        );
        self.post_raw(event, delivery, &headers, body)
    }

    fn get(&self, path: &str) -> Answer {
        http(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: serve\r\nConnection: close\r\n\r\n"),
            b"",
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
        let _ = &self.dir;
    }
}

/// A GitHub App key pair made with the openssl CLI: the private key as
/// GitHub hands it out (PKCS#1 PEM) and the public key the forge checks
/// JWTs with.
struct TestApp {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
}

impl TestApp {
    /// A new key pair, registered with the fixture's forge as the App's.
    fn new(fx: &Fixture) -> TestApp {
        let (app, public_key_der) = TestApp::unregistered();
        fx.forge.enable_app(AppConfig {
            id: APP_ID,
            public_key_der,
            installation: INSTALLATION,
        });
        app
    }

    /// A new key pair and its public key (PKCS#1 DER), registered nowhere.
    fn unregistered() -> (TestApp, Vec<u8>) {
        crate::common::require_program("openssl", "apt-get install openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("app.pem");
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(&key_file)
                .arg("2048"),
        );
        let pem = std::fs::read_to_string(&key_file).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
        let public = Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
            .arg(&key_file)
            .output()
            .expect("openssl rsa");
        assert!(
            public.status.success(),
            "openssl rsa -RSAPublicKey_out failed"
        );
        (
            TestApp {
                _dir: dir,
                key_file,
            },
            public.stdout,
        )
    }
}

/// The statuses of `sha` once `done` holds, or a panic naming what came.
fn wait_statuses(
    fx: &Fixture,
    serve: &Serve,
    sha: &str,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses = fx.forge.statuses(sha);
        if done(&statuses) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "statuses of {sha} after {timeout:?}: {:?}\n--- serve log\n{}",
            statuses
                .iter()
                .map(|s| format!("{}: {}", s["state"], s["description"]))
                .collect::<Vec<_>>(),
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_final(statuses: &[Value]) -> bool {
    statuses.iter().any(|s| s["state"] != "pending")
}

fn last(statuses: &[Value]) -> (String, String) {
    let s = statuses.last().expect("a status");
    (
        s["state"].as_str().unwrap_or("").to_string(),
        s["description"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until the pull request has `n` services and returns them.
fn wait_services(fx: &Fixture, pr: u64, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let services = fx.services(pr);
        if services.len() >= n || Instant::now() >= deadline {
            return services;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id of the running container of a service (waits for it).
fn running_container(service: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let id = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
            "--filter",
            "status=running",
        ]);
        if !id.is_empty() {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "{service} has no running container after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_signed_pull_request_is_built_with_an_app_token_to_success() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let answer = serve.deliver(
        "pull_request",
        &unique_name("delivery"),
        &pull_request(&fx, "opened", 21, &fx.sha),
    );
    assert_eq!(answer.code, 202, "{answer:?}");
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), is_final);
    let _guards = guard_all(&fx.services(21));
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success"),
        "{statuses:?}\n{}",
        serve.log()
    );
    // One token, for the one repository, with least privilege.
    let issued = fx.forge.issued_tokens();
    assert!(!issued.is_empty(), "an installation token was requested");
    for token in &issued {
        assert_eq!(token.repositories, std::slice::from_ref(&fx.repo));
        assert_eq!(
            token.permissions,
            serde_json::json!({"statuses": "write", "contents": "read"})
        );
        assert!(
            !serve.log().contains(&token.token),
            "a token reached the log"
        );
    }
    // The build's own statuses carried the installation token.
    let posted: Vec<_> = fx
        .forge
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path().contains("/statuses/"))
        .collect();
    assert!(!posted.is_empty());
    for req in posted {
        let auth = req.header("authorization").unwrap_or("");
        assert!(
            issued.iter().any(|t| auth.ends_with(&t.token)),
            "status posted with {auth:?}"
        );
    }
    let metrics = serve.get("/metrics");
    assert_eq!(metrics.code, 200);
    assert!(
        metrics.body.contains(
            "forge_serve_deliveries_total{event=\"pull_request\",outcome=\"accepted\"} 1"
        ),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("forge_serve_builds_launched_total 1"),
        "{}",
        metrics.body
    );
    assert_eq!(serve.get("/healthz").code, 200);
}

#[test]
fn unsigned_oversized_and_form_deliveries_are_refused_and_build_nothing() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let body = pull_request(&fx, "opened", 22, &fx.sha);
    let json = "Content-Type: application/json\r\n";

    let unsigned = serve.post_raw("pull_request", "d-1", json, &body);
    assert_eq!(unsigned.code, 401, "{unsigned:?}");
    let wrong = serve.post_raw(
        "pull_request",
        "d-2",
        &format!("{json}X-Hub-Signature-256: {}\r\n", sign(b"another body")),
        &body,
    );
    assert_eq!(wrong.code, 401, "{wrong:?}");
    let bad_hex = serve.post_raw(
        "pull_request",
        "d-3",
        &format!("{json}X-Hub-Signature-256: sha256=xyz\r\n"),
        &body,
    );
    assert_eq!(bad_hex.code, 401, "{bad_hex:?}");

    // Over GitHub's 25 MiB: refused from the declared length...
    let big = vec![b' '; 25 * 1024 * 1024 + 1];
    let too_large = serve.post_raw(
        "pull_request",
        "d-4",
        &format!("{json}X-Hub-Signature-256: {}\r\n", sign(&big)),
        &big,
    );
    assert_eq!(too_large.code, 413, "{too_large:?}");
    // ...and from the bytes of a chunked body.
    let head = format!(
        "POST / HTTP/1.1\r\nHost: serve\r\nX-GitHub-Event: push\r\n{json}\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for _ in 0..26 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1 << 20));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(http(serve.addr, &head, &chunked).code, 413);

    let form = serve.post_raw(
        "pull_request",
        "d-5",
        &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nX-Hub-Signature-256: {}\r\n",
            sign(&body)
        ),
        &body,
    );
    assert_eq!(form.code, 415, "{form:?}");
    assert!(form.body.contains("application/json"), "{form:?}");

    let mut ping = fixture_payload("ping-payload.json");
    retarget(&mut ping, &fx);
    let pong = serve.deliver("ping", "d-6", ping.to_string().as_bytes());
    assert_eq!(pong.code, 200, "{pong:?}");
    let other = serve.deliver("issues", "d-7", ping.to_string().as_bytes());
    assert_eq!(other.code, 204, "{other:?}");

    std::thread::sleep(Duration::from_secs(2));
    assert!(fx.services(22).is_empty(), "nothing was launched");
    assert!(fx.forge.statuses(&fx.sha).is_empty());
    assert!(fx.forge.issued_tokens().is_empty(), "no token was minted");
    let metrics = serve.get("/metrics").body;
    assert!(
        metrics.contains("forge_serve_signature_failures_total 3"),
        "{metrics}"
    );
}

#[test]
fn the_same_delivery_twice_starts_one_build() {
    let fx = Fixture::new(SLOW);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let body = pull_request(&fx, "opened", 23, &fx.sha);
    let id = unique_name("delivery");
    assert_eq!(serve.deliver("pull_request", &id, &body).code, 202);
    let again = serve.deliver("pull_request", &id, &body);
    assert!(again.code < 300, "{again:?}");
    let services = wait_services(&fx, 23, 1, Duration::from_secs(30));
    let _guards = guard_all(&services);
    running_container(&services[0], Duration::from_secs(60));
    // A restarted serve has no memory: the service's label remembers.
    let mut serve = serve;
    serve.kill();
    let serve = Serve::start(&fx, &app, &[]);
    assert_eq!(serve.deliver("pull_request", &id, &body).code, 202);
    std::thread::sleep(Duration::from_secs(3));
    let services = fx.services(23);
    let _more = guard_all(&services);
    assert_eq!(services.len(), 1, "{services:?}\n{}", serve.log());
    let label = docker(&[
        "service",
        "inspect",
        "--format",
        "{{index .Spec.Labels \"forge.delivery\"}}",
        &services[0],
    ]);
    assert_eq!(label, id);
}

#[test]
fn a_newer_push_cancels_the_older_build_and_closing_cancels_the_rest() {
    let fx = Fixture::new(SLOW);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let first = fx.sha.clone();
    assert_eq!(
        serve
            .deliver(
                "pull_request",
                &unique_name("d"),
                &pull_request(&fx, "opened", 24, &first)
            )
            .code,
        202
    );
    let services = wait_services(&fx, 24, 1, Duration::from_secs(30));
    let _g1 = guard_all(&services);
    running_container(&services[0], Duration::from_secs(60));
    wait_statuses(&fx, &serve, &first, Duration::from_secs(30), |s| {
        !s.is_empty()
    });

    let second = fx.push(SLOW);
    assert_eq!(
        serve
            .deliver(
                "pull_request",
                &unique_name("d"),
                &pull_request(&fx, "synchronize", 24, &second)
            )
            .code,
        202
    );
    let old = wait_statuses(&fx, &serve, &first, Duration::from_secs(90), is_final);
    let (state, description) = last(&old);
    assert_eq!(state, "error");
    assert!(description.contains("cancelled"), "{description}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let newer = loop {
        let now = fx.services(24);
        if let [one] = now.as_slice() {
            if *one != services[0] {
                break one.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single newer build: {now:?}\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    running_container(&newer, Duration::from_secs(60));
    let _g2 = guard_all(std::slice::from_ref(&newer));
    assert!(
        !is_final(&fx.forge.statuses(&second)),
        "the newer build runs"
    );

    assert_eq!(
        serve
            .deliver(
                "pull_request",
                &unique_name("d"),
                &pull_request(&fx, "closed", 24, &second)
            )
            .code,
        202
    );
    let closed = wait_statuses(&fx, &serve, &second, Duration::from_secs(90), |s| {
        s.last()
            .is_some_and(|s| s["description"] == "cancelled: pull request closed")
    });
    assert_eq!(last(&closed).0, "error");
    assert!(fx.services(24).is_empty(), "the services were removed");
}

/// Sidecar containers of this fixture's repository, running or not.
fn sidecars_of(fx: &Fixture) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=forge.sidecar.of",
        "--filter",
        &format!("label=forge.repo={OWNER}/{}", fx.repo),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// Waits up to `timeout` for the repository's sidecars to be `gone` (or
/// there); panics with serve's log when they are not.
fn wait_sidecars(fx: &Fixture, serve: &Serve, gone: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while sidecars_of(fx).is_empty() != gone {
        assert!(
            Instant::now() < deadline,
            "sidecars {} after {timeout:?}: {:?}\n--- serve log\n{}",
            if gone {
                "still there"
            } else {
                "never appeared"
            },
            sidecars_of(fx),
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_removes_a_builds_sidecars_when_it_ends_and_when_its_pull_request_closes() {
    let fx = Fixture::new(SLOW);
    let tag = fx.image.tag().to_string();
    let idle = format!("services:\n  idle:\n    image: {tag}\n    command: [sleep, \"600\"]\n");
    let app = TestApp::new(&fx);
    // gc, which would reap them too, runs at start and then once a minute.
    let serve = Serve::start(&fx, &app, &[]);

    // A build that ends: its sidecar goes with it, not at the next gc.
    let short = fx.push(&format!("{idle}execute:\n  - sleep 3\n"));
    let delivered = serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 31, &short),
    );
    assert_eq!(delivered.code, 202);
    let _g1 = guard_all(&wait_services(&fx, 31, 1, Duration::from_secs(30)));
    wait_sidecars(&fx, &serve, false, Duration::from_secs(60));
    let statuses = wait_statuses(&fx, &serve, &short, Duration::from_secs(90), is_final);
    assert_eq!(last(&statuses).0, "success", "{:?}", states(&statuses));
    wait_sidecars(&fx, &serve, true, Duration::from_secs(20));

    // A build cancelled by closing its pull request.
    let long = fx.push(&format!("{idle}{SLOW}"));
    let delivered = serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "synchronize", 31, &long),
    );
    assert_eq!(delivered.code, 202);
    wait_sidecars(&fx, &serve, false, Duration::from_secs(60));
    let closed = serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "closed", 31, &long),
    );
    assert_eq!(closed.code, 202);
    wait_statuses(&fx, &serve, &long, Duration::from_secs(90), |s| {
        s.last()
            .is_some_and(|s| s["description"] == "cancelled: pull request closed")
    });
    wait_sidecars(&fx, &serve, true, Duration::from_secs(20));
}

#[test]
fn a_push_to_the_default_branch_is_built() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    // GitHub's example repository's default branch is `master`.
    let other = serve.deliver("push", &unique_name("d"), &push(&fx, "feature", &fx.sha));
    assert_eq!(other.code, 204, "{other:?}");
    let answer = serve.deliver("push", &unique_name("d"), &push(&fx, "master", &fx.sha));
    assert_eq!(answer.code, 202, "{answer:?}");
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), is_final);
    let _guards = guard_all(&fx.services(0));
    assert_eq!(last(&statuses).0, "success", "{statuses:?}");
}

#[test]
fn a_fork_pull_request_reports_on_the_base_repository_unless_skipped() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let fork = |fx: &Fixture| {
        let mut p: Value =
            serde_json::from_slice(&pull_request(fx, "opened", 25, &fx.sha)).unwrap();
        let head = &mut p["pull_request"]["head"]["repo"];
        head["owner"]["login"] = "someone-else".into();
        head["full_name"] = format!("someone-else/{}", fx.repo).into();
        p.to_string().into_bytes()
    };
    let skipping = Serve::start(&fx, &app, &["--fork-prs", "skip"]);
    assert_eq!(
        skipping
            .deliver("pull_request", &unique_name("d"), &fork(&fx))
            .code,
        202
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(fx.services(25).is_empty(), "{}", skipping.log());
    drop(skipping);

    let serve = Serve::start(&fx, &app, &[]);
    assert_eq!(
        serve
            .deliver("pull_request", &unique_name("d"), &fork(&fx))
            .code,
        202
    );
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), is_final);
    let _guards = guard_all(&fx.services(25));
    assert_eq!(last(&statuses).0, "success", "{statuses:?}");
    let base = format!("/repos/{OWNER}/{}/statuses/{}", fx.repo, fx.sha);
    assert!(
        statuses
            .iter()
            .all(|s| s["url"].as_str().unwrap_or("").ends_with(&base)),
        "{statuses:?}"
    );
}

#[test]
fn a_killed_build_container_gets_a_final_error_naming_the_kill() {
    let fx = Fixture::new(SLOW);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 26, &fx.sha),
    );
    let services = wait_services(&fx, 26, 1, Duration::from_secs(30));
    let _guards = guard_all(&services);
    let container = running_container(&services[0], Duration::from_secs(60));
    wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(30), |s| {
        !s.is_empty()
    });
    docker(&["kill", "-s", "KILL", &container]);
    let killed = Instant::now();
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(10), is_final);
    assert!(killed.elapsed() < Duration::from_secs(10));
    let (state, description) = last(&statuses);
    assert_eq!(state, "error");
    assert!(description.contains("SIGKILL"), "{description}");
}

#[test]
fn a_build_over_its_memory_limit_ends_out_of_memory() {
    let fx = Fixture::new(
        "execute:\n  - echo filling memory\n  - dd if=/dev/zero of=/dev/null bs=300M count=1\n",
    );
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &["--memory", "64m"]);
    serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 27, &fx.sha),
    );
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), |s| {
        s.last().is_some_and(|s| {
            s["description"]
                .as_str()
                .unwrap_or("")
                .contains("out of memory")
        })
    });
    let _guards = guard_all(&fx.services(27));
    let (state, description) = last(&statuses);
    assert_eq!(state, "error");
    assert_eq!(
        description,
        "build container killed: out of memory (limit 64 MiB)"
    );
}

#[test]
fn an_image_that_does_not_exist_gets_an_error_naming_it() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let missing = format!("{}:404", unique_name("forge-no-such-image"));
    fx.publish(&format!("image: {missing}\n{PASSING}"));
    let serve = Serve::start(&fx, &app, &[]);
    serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 28, &fx.sha),
    );
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), is_final);
    let _guards = guard_all(&fx.services(28));
    let (state, description) = last(&statuses);
    assert_eq!(state, "error");
    assert!(description.contains(&missing), "{description}");
    assert!(fx.services(28).is_empty());
}

#[test]
fn a_build_waiting_for_a_node_says_it_is_queued() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    // No node has 10000 CPUs: the swarm keeps the task pending.
    let serve = Serve::start(&fx, &app, &["--cpus", "10000"]);
    serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 29, &fx.sha),
    );
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(15), |s| {
        s.iter().any(|s| {
            s["description"]
                .as_str()
                .unwrap_or("")
                .starts_with("queued")
        })
    });
    let _guards = guard_all(&fx.services(29));
    let queued = statuses
        .iter()
        .find(|s| {
            s["description"]
                .as_str()
                .unwrap_or("")
                .starts_with("queued")
        })
        .unwrap();
    assert_eq!(queued["state"], "pending");
    assert_eq!(
        queued["description"],
        "queued: waiting for a node with 10000 CPUs"
    );
    let metrics = serve.get("/metrics").body;
    assert!(metrics.contains("forge_serve_builds_queued 1"), "{metrics}");
}

/// Bytes of memory this node has.
fn node_memory() -> u64 {
    docker(&["info", "--format", "{{.MemTotal}}"])
        .parse()
        .expect("docker info reports MemTotal")
}

#[test]
fn serve_killed_between_creation_and_start_finishes_the_launch_after_a_restart() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    // A service holding 60% of the node's memory keeps a build that
    // reserves another 60% pending: created, not started.
    let share = node_memory() * 6 / 10;
    let blocker = unique_name("forge-serve-blocker");
    docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        &blocker,
        "--reserve-memory",
        &share.to_string(),
        "--restart-condition",
        "none",
        fx.image.tag(),
        "sleep",
        "300",
    ]);
    let blocker_guard = crate::common::Service::guard(blocker.clone());
    let memory = format!("{}m", share >> 20);
    let mut first = Serve::start(&fx, &app, &["--memory", &memory]);
    first.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 30, &fx.sha),
    );
    let services = wait_services(&fx, 30, 1, Duration::from_secs(30));
    let _guards = guard_all(&services);
    assert_eq!(services.len(), 1, "{}", first.log());
    std::thread::sleep(Duration::from_secs(1));
    first.kill();
    let state = docker(&[
        "service",
        "ps",
        "--format",
        "{{.CurrentState}}",
        &services[0],
    ]);
    assert!(state.starts_with("Pending"), "the build waits: {state}");

    let second = Serve::start(&fx, &app, &["--memory", &memory]);
    std::thread::sleep(Duration::from_secs(1));
    drop(blocker_guard);
    let statuses = wait_statuses(&fx, &second, &fx.sha, Duration::from_secs(90), is_final);
    assert_eq!(
        last(&statuses).0,
        "success",
        "{statuses:?}\n{}",
        second.log()
    );
}

#[test]
fn sigterm_stops_serve_and_leaves_running_builds_alone() {
    let fx = Fixture::new(SLOW);
    let app = TestApp::new(&fx);
    let mut serve = Serve::start(&fx, &app, &["--log-format", "json"]);
    serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 31, &fx.sha),
    );
    let services = wait_services(&fx, 31, 1, Duration::from_secs(30));
    let _guards = guard_all(&services);
    let container = running_container(&services[0], Duration::from_secs(60));
    // Give the launch its last steps (the watcher starts after the start).
    std::thread::sleep(Duration::from_millis(500));
    let pid = serve.child.id().to_string();
    run_ok(Command::new("kill").args(["-TERM", &pid]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.child.try_wait().expect("wait for serve") {
            break status;
        }
        assert!(Instant::now() < deadline, "serve still runs after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", serve.log());
    let running = docker(&["inspect", "--format", "{{.State.Running}}", &container]);
    assert_eq!(running, "true", "the build goes on");
    // Every line is a JSON object.
    std::thread::sleep(Duration::from_millis(200));
    let log = serve.log();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(log.contains("stopped"), "{log}");
    serve.kill();
}

pub(crate) fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{text}` is not a whole number")),
    }
}

/// Resident set size high-water mark of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Many signed deliveries at once (FORGE_SERVE_PRS pull requests, each
/// opened then pushed FORGE_SERVE_PUSHES - 1 more times, plus a ping each;
/// FORGE_SERVE_IN_FLIGHT at a time): every one is acknowledged quickly,
/// none is lost, and each pull request ends with exactly one build, of its
/// newest sha, which succeeds. `benches/serve_load.sh` runs it with 500
/// deliveries in a release build and reports the figures.
#[test]
fn many_deliveries_end_in_one_build_per_pull_request_at_its_newest_sha() {
    let prs = env_count("FORGE_SERVE_PRS", 4);
    let pushes = env_count("FORGE_SERVE_PUSHES", 3).max(1);
    let in_flight = env_count("FORGE_SERVE_IN_FLIGHT", 8).max(1);
    // Extra serve flags for benchmark runs (e.g. `--max-launches 4`).
    let flags = std::env::var("FORGE_SERVE_FLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &flags);
    let base = 100;
    // Per pull request, its deliveries in order; the last sha is the newest.
    let mut lanes: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    let mut newest = Vec::new();
    for p in 0..prs {
        let number = (base + p) as u64;
        let mut lane = Vec::new();
        let mut sha = String::new();
        for k in 0..pushes {
            sha = format!("{:040x}", fastrand::u128(..));
            let action = if k == 0 { "opened" } else { "synchronize" };
            lane.push((
                "pull_request".to_string(),
                pull_request(&fx, action, number, &sha),
            ));
        }
        let mut ping = fixture_payload("ping-payload.json");
        retarget(&mut ping, &fx);
        lane.insert(
            1.min(lane.len()),
            ("ping".to_string(), ping.to_string().into_bytes()),
        );
        newest.push(sha);
        lanes.push(lane);
    }
    let total: usize = lanes.iter().map(Vec::len).sum();
    // Workers take whole pull requests, so each one's deliveries go in order.
    let queue = Arc::new(Mutex::new(lanes));
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let addr = serve.addr;
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                loop {
                    let Some(lane) = queue.lock().unwrap().pop() else {
                        return acks;
                    };
                    for (event, body) in lane {
                        let head = format!(
                            "POST / HTTP/1.1\r\nHost: serve\r\nX-GitHub-Event: {event}\r\n\
                             X-GitHub-Delivery: {}\r\nContent-Type: application/json\r\n\
                             X-Hub-Signature-256: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            unique_name("load"),
                            sign(&body),
                            body.len()
                        );
                        let sent = Instant::now();
                        let answer = http(addr, &head, &body);
                        acks.push((answer.code, sent.elapsed()));
                    }
                }
            })
        })
        .collect();
    let mut acks: Vec<(u16, Duration)> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a delivery thread panicked"))
        .collect();
    let sent_in = started.elapsed();
    assert_eq!(acks.len(), total, "every delivery was answered");
    for (code, _) in &acks {
        assert!(*code == 200 || *code == 202, "answer {code}");
    }
    acks.sort_by_key(|(_, t)| *t);
    let p50 = acks[acks.len() / 2].1;
    let p99 = acks[(acks.len() * 99 / 100).min(acks.len() - 1)].1;

    // Every pull request ends with one build, of its newest sha, passing.
    let deadline = Instant::now() + Duration::from_secs(60 + 3 * prs as u64);
    for (p, sha) in newest.iter().enumerate() {
        let statuses = wait_statuses(
            &fx,
            &serve,
            sha,
            deadline.saturating_duration_since(Instant::now()),
            is_final,
        );
        assert_eq!(last(&statuses).0, "success", "{statuses:?}");
        let number = (base + p) as u64;
        let services = fx.services(number);
        let _guards = guard_all(&services);
        assert_eq!(services.len(), 1, "pull request {number}: {services:?}");
        let label = docker(&[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"forge.sha\"}}",
            &services[0],
        ]);
        assert_eq!(&label, sha, "pull request {number} builds its newest sha");
    }
    let rss = peak_rss_kib(serve.child.id());
    eprintln!(
        "serve load: {total} deliveries ({prs} pull requests x {pushes} pushes + a ping each, \
         {in_flight} in flight) sent in {sent_in:?}; acknowledgement p50 {p50:?}, p99 {p99:?}; \
         serve's peak RSS {} KiB",
        rss
    );
    // Acknowledged without waiting for launches (the figure to meet is
    // p99 < 100 ms, measured by benches/serve_load.sh in a release build).
    assert!(p99 < Duration::from_secs(2), "p99 acknowledgement {p99:?}");
}

#[test]
fn a_jwt_signed_with_another_key_gets_no_token_and_builds_nothing() {
    let fx = Fixture::new(PASSING);
    let _genuine = TestApp::new(&fx);
    // The same App id with a key the forge does not know.
    let (impostor, _) = TestApp::unregistered();
    let serve = Serve::start(&fx, &impostor, &[]);
    let answer = serve.deliver(
        "pull_request",
        &unique_name("d"),
        &pull_request(&fx, "opened", 32, &fx.sha),
    );
    assert_eq!(answer.code, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !serve.log().contains("build not launched") {
        assert!(Instant::now() < deadline, "{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fx.forge.issued_tokens().is_empty());
    assert!(fx.services(32).is_empty());
    let log = serve.log();
    assert!(log.contains("access_tokens"), "{log}");
    assert!(log.contains("401"), "{log}");
}

/// A build whose first command prints the kernel's uptime clock, which
/// containers share with the test.
const UPTIME_FIRST: &str = "\
execute:
  - echo UPTIME=$(cat /proc/uptime)
";

pub(crate) fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    text.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .expect("/proc/uptime starts with seconds")
}

/// The uptime the build's first command printed, if it did.
pub(crate) fn first_command_uptime(output: &str) -> Option<f64> {
    // The command line itself is echoed too (`UPTIME=$(cat ...`).
    output
        .split("UPTIME=")
        .skip(1)
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

pub(crate) fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2] * 1000.0
}

/// Webhook POST to the build's first command through serve, beside
/// `forge-launch swarm --wait` invoked for the same build, interleaved
/// (FORGE_SERVE_LATENCY_RUNS of each, default 2): both paths reach the
/// command. `benches/serve_latency.sh` runs it in a release build with more
/// runs and reports the medians (issue 12's figure).
#[test]
fn a_delivery_reaches_the_first_command_beside_forge_launch_swarm() {
    let runs = env_count("FORGE_SERVE_LATENCY_RUNS", 2).max(1);
    let fx = Fixture::new(UPTIME_FIRST);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let (mut by_swarm, mut by_serve) = (Vec::new(), Vec::new());
    for run in 0..runs as u64 {
        let pr = 400 + 2 * run;
        let start = uptime();
        let out = fx
            .swarm_at(&fx.sha, pr, &["--wait"])
            .output()
            .expect("run forge-launch swarm");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "forge-launch swarm failed:\n{text}");
        let first = first_command_uptime(&text)
            .unwrap_or_else(|| panic!("no UPTIME line from forge-launch swarm:\n{text}"));
        by_swarm.push(first - start);

        let pr = pr + 1;
        let start = uptime();
        let answer = serve.deliver(
            "pull_request",
            &unique_name("latency"),
            &pull_request(&fx, "opened", pr, &fx.sha),
        );
        assert_eq!(answer.code, 202, "{answer:?}");
        let service = wait_services(&fx, pr, 1, Duration::from_secs(60))
            .pop()
            .unwrap_or_else(|| panic!("no service for pull request {pr}:\n{}", serve.log()));
        let _guard = crate::common::Service::guard(service.clone());
        let deadline = Instant::now() + Duration::from_secs(90);
        let first = loop {
            let logs = Command::new("docker")
                .args(["service", "logs", "--raw", &service])
                .output()
                .expect("docker service logs");
            if let Some(t) = first_command_uptime(&String::from_utf8_lossy(&logs.stdout)) {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "no UPTIME line from {service} within 90 s:\n{}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        by_serve.push(first - start);
    }
    let swarm = median_ms(&mut by_swarm);
    let serve_ms = median_ms(&mut by_serve);
    eprintln!(
        "serve latency: {runs} runs each, invocation to first command, median \
         forge-launch swarm {swarm:.0} ms, serve {serve_ms:.0} ms, difference {:.0} ms",
        serve_ms - swarm
    );
    for t in by_swarm.iter().chain(&by_serve) {
        assert!(*t > 0.0, "a first command ran before its invocation: {t}");
    }
}

/// A unix socket forwarding to the real daemon's, which a test can cut.
struct DaemonProxy {
    socat: Child,
    socket: PathBuf,
}

impl DaemonProxy {
    fn start(socket: PathBuf) -> DaemonProxy {
        crate::common::require_program("socat", "apt-get install socat");
        let _ = std::fs::remove_file(&socket);
        let socat = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            .stdin(Stdio::null())
            .spawn()
            .expect("start socat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "socat made no {socket:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        DaemonProxy { socat, socket }
    }

    fn cut(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for DaemonProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// /healthz follows the manager: 200 while it answers, 503 with a reason
/// while it doesn't, 200 again when it is back; serve itself keeps running.
#[test]
fn healthz_is_503_while_the_swarm_manager_does_not_answer() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let (mut cmd, dir) = Serve::command(&fx, &app, &[]);
    let socket = dir.path().join("docker.sock");
    let mut proxy = DaemonProxy::start(socket.clone());
    cmd.env("DOCKER_HOST", format!("unix://{}", socket.display()));
    let serve = Serve::spawn(cmd, dir);
    let healthy = healthz_until(&serve, 200);
    assert_eq!(healthy.code, 200, "{healthy:?}\n{}", serve.log());

    proxy.cut();
    let started = Instant::now();
    let down = serve.get("/healthz");
    assert_eq!(down.code, 503, "{down:?}");
    assert!(down.body.contains("does not answer"), "{down:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "/healthz took {:?} to answer",
        started.elapsed()
    );

    let _proxy = DaemonProxy::start(socket);
    let back = healthz_until(&serve, 200);
    assert_eq!(back.code, 200, "{back:?}\n{}", serve.log());
}

/// /healthz until it answers `code` or 10 s have passed (a proxy just
/// started may reset the first connection under load); the last answer.
fn healthz_until(serve: &Serve, code: u16) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = serve.get("/healthz");
        if answer.code == code || Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The App's installation token expires while the build runs (GitHub's
/// last an hour; these 10 s): forgexec's own final status is refused and
/// it exits 4, the forge still shows `pending`, and serve posts the final
/// status with a fresh token.
#[test]
fn a_build_that_outlives_its_token_still_gets_its_final_status() {
    let fx = Fixture::new("execute:\n  - sleep 15\n  - echo done\n");
    let app = TestApp::new(&fx);
    fx.forge.set_token_lifetime(Duration::from_secs(10));
    let serve = Serve::start(&fx, &app, &[]);
    let answer = serve.deliver(
        "pull_request",
        &unique_name("delivery"),
        &pull_request(&fx, "opened", 51, &fx.sha),
    );
    assert_eq!(answer.code, 202, "{answer:?}");
    let statuses = wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(120), is_final);
    let _guards = guard_all(&fx.services(51));
    let (state, description) = last(&statuses);
    assert_eq!(state, "success", "{statuses:?}\n{}", serve.log());
    assert!(
        description.contains("serve posted this"),
        "{description}\n{}",
        serve.log()
    );
    assert!(
        serve.log().contains("posting success for exit code 4"),
        "{}",
        serve.log()
    );
    // forgexec did post pending updates while its token was good.
    assert!(
        statuses.iter().any(|s| s["state"] == "pending"),
        "{statuses:?}"
    );
}

/// A build that reported its own final status gets nothing more from
/// serve (its check of the forge's statuses finds the final one).
#[test]
fn a_build_that_reported_gets_no_second_final_status() {
    let fx = Fixture::new(PASSING);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &[]);
    let answer = serve.deliver(
        "pull_request",
        &unique_name("delivery"),
        &pull_request(&fx, "opened", 52, &fx.sha),
    );
    assert_eq!(answer.code, 202, "{answer:?}");
    wait_statuses(&fx, &serve, &fx.sha, Duration::from_secs(90), is_final);
    let _guards = guard_all(&fx.services(52));
    // serve reads the statuses once the container has ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fx
        .forge
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path().ends_with(&format!("/commits/{}/statuses", fx.sha)))
    {
        assert!(
            Instant::now() < deadline,
            "serve never read the statuses:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let finals: Vec<_> = fx
        .forge
        .statuses(&fx.sha)
        .into_iter()
        .filter(|s| s["state"] != "pending")
        .collect();
    assert_eq!(finals.len(), 1, "{finals:?}\n{}", serve.log());
    assert!(
        !finals[0]["description"]
            .as_str()
            .unwrap_or("")
            .contains("serve posted this"),
        "{finals:?}"
    );
}

/// With several `--push-branches`, a push to one branch does not cancel
/// the running build of another: each branch is its own line of builds.
#[test]
fn pushes_to_two_branches_build_side_by_side() {
    let fx = Fixture::new(SLOW);
    let app = TestApp::new(&fx);
    let serve = Serve::start(&fx, &app, &["--push-branches", "master,release"]);
    let first = fx.sha.clone();
    let answer = serve.deliver("push", &unique_name("d"), &push(&fx, "master", &first));
    assert_eq!(answer.code, 202, "{answer:?}");
    let services = wait_services(&fx, 0, 1, Duration::from_secs(30));
    let _g1 = guard_all(&services);
    running_container(&services[0], Duration::from_secs(60));

    let second = fx.push(SLOW);
    let answer = serve.deliver("push", &unique_name("d"), &push(&fx, "release", &second));
    assert_eq!(answer.code, 202, "{answer:?}");
    let both = wait_services(&fx, 0, 2, Duration::from_secs(30));
    let _g2 = guard_all(&both);
    assert_eq!(both.len(), 2, "{both:?}\n{}", serve.log());
    for service in &both {
        running_container(service, Duration::from_secs(60));
    }
    assert!(
        !is_final(&fx.forge.statuses(&first)),
        "the master build was cancelled: {:?}",
        fx.forge.statuses(&first)
    );

    // A newer push to master does supersede the master build.
    let third = fx.push(SLOW);
    let answer = serve.deliver("push", &unique_name("d"), &push(&fx, "master", &third));
    assert_eq!(answer.code, 202, "{answer:?}");
    let old = wait_statuses(&fx, &serve, &first, Duration::from_secs(90), is_final);
    assert_eq!(last(&old).0, "error", "{old:?}");
    assert!(last(&old).1.contains("cancelled"), "{old:?}");
    let now = wait_services(&fx, 0, 2, Duration::from_secs(30));
    let _g3 = guard_all(&now);
    assert!(
        !is_final(&fx.forge.statuses(&second)),
        "the release build still runs"
    );
}
