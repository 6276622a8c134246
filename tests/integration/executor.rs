//! The in-container executor end to end: the static forgexec binary runs
//! builds against a GitHub-like test server on 127.0.0.1 (statuses, zipball)
//! and nginx WebDAV (artifacts, build log), as a host process and as PID 1 of
//! real containers (an empty image holding only forgexec and busybox, and a
//! busybox image with a shell). The cases about the token file, signals and
//! PID 1 take the [`Platform`] to run on: `aarch64.rs` runs them again on
//! aarch64 under emulation.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

const SHA: &str = "4f2d1c0b9a8e7d6c5b4a39281706f5e4d3c2b1a0";
const TOKEN: &str = "ghs_TestToken0123456789abcdef";

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// A build set up on the host: a workspace with `.forge.yml`, a token file,
/// the forge server, and the environment forgexec gets.
struct HostBuild {
    server: ForgeServer,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    forgexec: PathBuf,
}

impl HostBuild {
    fn new(spec: &str) -> HostBuild {
        HostBuild::with_forgexec(spec, static_forgexec())
    }

    /// The same build run by another forgexec binary (another CPU's, under
    /// emulation).
    fn with_forgexec(spec: &str, forgexec: PathBuf) -> HostBuild {
        let server = ForgeServer::start(TOKEN);
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("workspace");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join(".forge.yml"), spec).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let env = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("FORGE_OWNER".into(), "octo".into()),
            ("FORGE_REPO".into(), "hello".into()),
            ("FORGE_SHA".into(), SHA.into()),
            ("FORGE_PULL_REQUEST".into(), "7".into()),
            ("FORGE_API_URL".into(), server.url()),
            (
                "FORGE_STATUS_URL".into(),
                format!("{}/repos/octo/hello/statuses/{SHA}", server.url()),
            ),
            ("FORGE_TOKEN_FILE".into(), token_file.display().to_string()),
            ("FORGE_WORKSPACE".into(), ws.display().to_string()),
            ("FORGE_BUILD_ID".into(), "b1".into()),
        ];
        HostBuild {
            server,
            dir,
            env,
            forgexec,
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.into(), value.into()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.forgexec);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self) -> Outcome {
        let out = self.command().output().expect("forgexec starts");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// (state, description) of every status posted, in order.
    fn statuses(&self) -> Vec<(String, String)> {
        states(&self.server.statuses(SHA))
    }
}

fn states(statuses: &[Value]) -> Vec<(String, String)> {
    statuses
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or("?").to_string(),
                s["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn final_status(statuses: &[(String, String)]) -> (String, String) {
    let finals: Vec<_> = statuses
        .iter()
        .filter(|(state, _)| state != "pending")
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "exactly one final status expected: {statuses:?}"
    );
    assert_eq!(
        &statuses.last().unwrap().0,
        &finals[0].0,
        "the final status must come last: {statuses:?}"
    );
    finals[0].clone()
}

#[test]
fn a_passing_build_posts_pending_statuses_then_success() {
    // Each stage lasts over a second: status writes are a second apart, and
    // pending updates still unsent when the final status is due are dropped.
    let build = HostBuild::new(
        "setup:\n  - echo preparing; sleep 1.5\nexecute:\n  - echo hello from the test stage; sleep 1.5\n  - [\"true\"]\n",
    );
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    let statuses = build.statuses();
    let descriptions: Vec<_> = statuses.iter().map(|(s, d)| format!("{s}: {d}")).collect();
    assert_eq!(
        descriptions[..3],
        [
            "pending: execute: starting",
            "pending: setup: running 1 command(s)",
            "pending: test: running 2 command(s)"
        ]
    );
    let (state, description) = final_status(&statuses);
    assert_eq!(state, "success");
    assert!(
        description.starts_with("test: 2/2 commands passed in "),
        "{description}"
    );
    assert!(
        out.stdout
            .contains("==> [setup 1/1] echo preparing; sleep 1.5\npreparing\n"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("hello from the test stage"),
        "{}",
        out.all()
    );
    // Every status carries the context and the credential.
    for request in build
        .server
        .requests()
        .iter()
        .filter(|r| r.route == Some(Route::Statuses))
    {
        assert_eq!(
            request.header("Authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.json.as_ref().unwrap()["context"], "forge/execute");
    }
}

#[test]
fn the_first_failing_command_fails_the_build_and_ends_the_chain() {
    let build = HostBuild::new("execute:\n  - echo one\n  - exit 3\n  - echo never-runs\n");
    let out = build.run();
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(
        final_status(&build.statuses()),
        ("failure".into(), "test: `exit 3` exited 3".into())
    );
    assert!(!out.stdout.contains("never-runs"), "{}", out.all());
    assert!(
        out.stdout.contains("<== [test 2/3] FAILED: exited 3"),
        "{}",
        out.all()
    );
}

#[test]
fn a_failing_setup_skips_the_test_stage() {
    let build = HostBuild::new(
        "setup:\n  - name: deps\n    run: [\"false\"]\nexecute:\n  - echo never-runs\n",
    );
    let out = build.run();
    assert_eq!(out.code, 1, "{}", out.all());
    let statuses = build.statuses();
    assert_eq!(
        final_status(&statuses),
        ("failure".into(), "setup: `deps` exited 1".into())
    );
    assert!(
        !statuses.iter().any(|(_, d)| d.starts_with("test:")),
        "{statuses:?}"
    );
    assert!(!out.stdout.contains("never-runs"));
}

#[test]
fn command_and_build_timeouts_fail_the_build_naming_the_command() {
    let build = HostBuild::new("execute:\n  - run: sleep 30\n    timeout: 1s\n");
    let started = Instant::now();
    let out = build.run();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        final_status(&build.statuses()),
        (
            "failure".into(),
            "test: `sleep 30` timed out after 1.0s".into()
        )
    );

    let build = HostBuild::new("timeout: 1s\nexecute:\n  - sleep 30\n  - echo never-runs\n");
    let out = build.run();
    assert_eq!(out.code, 1, "{}", out.all());
    assert_eq!(
        final_status(&build.statuses()),
        (
            "failure".into(),
            "test: `sleep 30` hit the build timeout of 1.0s".into()
        )
    );
}

#[test]
fn an_unknown_action_is_an_error_listing_the_actions() {
    let mut build = HostBuild::new("execute:\n  - echo hi\nactions:\n  lint:\n    - echo lint\n");
    build.set("FORGE_ACTION", "docs");
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert_eq!(
        description,
        "action `docs` is not in .forge.yml (has: execute, lint)"
    );
    assert!(
        out.stderr.contains("FORGE_ACTION `docs` is not defined"),
        "{}",
        out.all()
    );
}

#[test]
fn a_named_action_runs_its_commands_under_its_own_context() {
    let mut build =
        HostBuild::new("execute:\n  - echo default\nactions:\n  lint:\n    - echo linting\n");
    build.set("FORGE_ACTION", "lint");
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("linting") && !out.stdout.contains("default\n"),
        "{}",
        out.all()
    );
    assert!(build
        .server
        .statuses(SHA)
        .iter()
        .all(|s| s["context"] == "forge/lint"));
}

#[test]
fn an_invalid_spec_posts_an_error_status_and_exits_2() {
    let build = HostBuild::new("exectue:\n  - echo hi\n");
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert!(
        description.starts_with("invalid .forge.yml: "),
        "{description}"
    );
    assert!(description.chars().count() <= 140);
    assert!(out.stderr.contains(".forge.yml:1:1:"), "{}", out.all());
}

impl HostBuild {
    /// Runs the build, failing the test when it is still running after
    /// `limit`.
    fn run_within(&self, limit: Duration) -> Outcome {
        let out = output_within(&mut self.command(), limit);
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_forge_yml_that_is_not_a_regular_file_is_an_error_not_a_hang() {
    // issue 11: a FIFO (or /dev/ptmx) blocked the read forever.
    let ws_fifo = HostBuild::new("unused: true\n");
    std::fs::remove_file(ws_fifo.workspace().join(".forge.yml")).unwrap();
    mkfifo(&ws_fifo.workspace().join(".forge.yml"));
    let ws_pty = HostBuild::new("unused: true\n");
    std::fs::remove_file(ws_pty.workspace().join(".forge.yml")).unwrap();
    std::os::unix::fs::symlink("/dev/ptmx", ws_pty.workspace().join(".forge.yml")).unwrap();
    for (build, kind) in [(&ws_fifo, "named pipe (FIFO)"), (&ws_pty, "")] {
        let out = build.run_within(Duration::from_secs(20));
        assert_eq!(out.code, 2, "{}", out.all());
        let (state, description) = final_status(&build.statuses());
        assert_eq!(state, "error");
        assert!(
            description.starts_with("invalid .forge.yml: "),
            "{description}"
        );
        assert!(out.stderr.contains(".forge.yml: error: "), "{}", out.all());
        assert!(out.stderr.contains(kind), "{}", out.all());
    }
}

#[test]
fn a_token_file_that_is_a_fifo_or_a_link_is_refused_at_once() {
    let fifo = HostBuild::new("execute:\n  - touch ran\n");
    std::fs::remove_file(fifo.token_file()).unwrap();
    mkfifo(&fifo.token_file());
    let out = fifo.run_within(Duration::from_secs(20));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("named pipe (FIFO)"), "{}", out.all());
    assert!(!fifo.workspace().join("ran").exists());

    // A link is refused, and neither it nor the token it names is deleted
    // (deleting the link would leave the token readable by the build).
    let link = HostBuild::new("execute:\n  - touch ran\n");
    let real = link.dir.path().join("real-token");
    std::fs::rename(link.token_file(), &real).unwrap();
    std::os::unix::fs::symlink(&real, link.token_file()).unwrap();
    let out = link.run_within(Duration::from_secs(20));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.all());
    assert!(!link.workspace().join("ran").exists());
    assert!(link.token_file().symlink_metadata().is_ok() && real.exists());
    assert!(!out.stderr.contains(TOKEN) && !out.stdout.contains(TOKEN));
}

#[test]
fn a_bad_ca_certificate_is_an_invalid_environment_with_an_error_status() {
    // Not PEM: the build does not run, exit 2, and the error status still
    // goes out (through the public roots; the test forge is plain HTTP).
    let mut build = HostBuild::new("execute:\n  - touch ran\n");
    let not_pem = build.dir.path().join("ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    build.set("FORGE_CA_CERT", &not_pem.display().to_string());
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!build.workspace().join("ran").exists());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert!(description.starts_with("FORGE_CA_CERT: "), "{description}");

    // Missing: named by validation, exit 2, error status.
    let mut build = HostBuild::new("execute:\n  - touch ran\n");
    build.set("FORGE_CA_CERT", "/nonexistent/ca.pem");
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("FORGE_CA_CERT: /nonexistent/ca.pem does not exist"),
        "{}",
        out.all()
    );
    assert_eq!(
        final_status(&build.statuses()),
        (
            "error".into(),
            "invalid build environment: FORGE_CA_CERT /nonexistent/ca.pem does not exist".into()
        )
    );
}

#[test]
fn the_build_waits_for_its_services_ports_before_setup() {
    // The port opens 2 s into the wait (past the statuses' spacing, so the
    // waiting status is posted).
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let listening = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(listening);
    });
    let build = HostBuild::new(&format!(
        "services:\n  db:\n    image: postgres:16\n    ports: [{port}]\nsetup: [touch set-up]\nexecute:\n  - touch ran\n"
    ));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(build.workspace().join("ran").exists());
    let statuses = build.statuses();
    assert!(
        statuses.contains(&("pending".into(), format!("waiting for services: db:{port}"))),
        "{statuses:?}"
    );
    assert_eq!(final_status(&statuses).0, "success");
    listener.join().unwrap();
}

#[test]
fn a_service_that_never_listens_is_an_error_naming_it_and_nothing_runs() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let build = HostBuild::new(&format!(
        "services:\n  db:\n    image: postgres:16\n    ports: [{port}]\n    wait: 1s\nexecute:\n  - touch ran\n"
    ));
    let out = build.run();
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(!build.workspace().join("ran").exists());
    assert_eq!(
        final_status(&build.statuses()),
        (
            "error".into(),
            format!("service `db` not ready on :{port} after 1s")
        )
    );
}

#[test]
fn a_missing_variable_is_named_and_nothing_runs() {
    let mut build = HostBuild::new("execute:\n  - touch ran\n");
    build.env.retain(|(k, _)| k != "FORGE_SHA");
    build.set("FORGE_PULL_REQUEST", "seven");
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("FORGE_SHA: is not set"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr
            .contains("FORGE_PULL_REQUEST: `seven` is not a whole number"),
        "{}",
        out.all()
    );
    assert!(!build.workspace().join("ran").exists());
    // The pull request still gets a final status saying what is wrong.
    assert_eq!(
        final_status(&build.statuses()),
        (
            "error".into(),
            "invalid build environment: FORGE_SHA is not set (+1 more)".into()
        )
    );
    assert!(
        !build.token_file().exists(),
        "the token file is still removed"
    );
}

#[test]
fn secrets_and_the_token_never_reach_commands_or_output() {
    secrets_and_the_token_file_stay_hidden(static_forgexec());
}

pub(crate) fn secrets_and_the_token_file_stay_hidden(forgexec: PathBuf) {
    let mut build = HostBuild::with_forgexec(
        concat!(
            "secrets: [API_KEY]\n",
            "execute:\n",
            "  - echo \"key=$API_KEY\"\n",
            "  - env | sort\n",
            "  - cat \"$TOKEN_PATH\" || echo token-file-gone\n",
            "  - echo \"token=${FORGE_TOKEN:-unset}\"\n",
            "  - echo ghs_TestToken0123456789abcdef\n",
        ),
        forgexec,
    );
    build.set("API_KEY", "k3y-that-must-not-leak");
    let token_path = build.token_file().display().to_string();
    build.set("TOKEN_PATH", &token_path);
    let artifacts = tempfile::tempdir().unwrap();
    build.set(
        "FORGE_ARTIFACTS_URL",
        &format!("file://{}", artifacts.path().display()),
    );
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        !build.token_file().exists(),
        "the token file must be deleted"
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(TOKEN), "token leaked:\n{}", out.all());
        assert!(
            !text.contains("k3y-that-must-not-leak"),
            "secret leaked:\n{}",
            out.all()
        );
    }
    assert!(out.stdout.contains("key=***"), "{}", out.all());
    assert!(out.stdout.contains("token-file-gone"), "{}", out.all());
    assert!(out.stdout.contains("token=unset"), "{}", out.all());
    assert!(!out.stdout.contains("FORGE_TOKEN_FILE="), "{}", out.all());
    let log = std::fs::read_to_string(
        artifacts
            .path()
            .join(format!("octo/hello/{SHA}/execute/b1/build.log")),
    )
    .unwrap();
    assert!(
        log.contains("key=***") && !log.contains(TOKEN) && !log.contains("k3y-that-must-not-leak"),
        "{log}"
    );
}

#[test]
fn sigterm_cancels_the_build_kills_its_processes_and_still_reports() {
    sigterm_cancels_and_reports(static_forgexec());
}

pub(crate) fn sigterm_cancels_and_reports(forgexec: PathBuf) {
    let mut build = HostBuild::with_forgexec(
        concat!(
        "execute:\n",
        "  - name: server\n",
        "    run: \"(while true; do date +%s%N > heartbeat; sleep 0.1; done) & trap '' TERM; while true; do sleep 0.1; done\"\n",
        "  - echo never-runs\n",
        ),
        forgexec,
    );
    build.set("FORGE_GRACE", "1s");
    let artifacts = tempfile::tempdir().unwrap();
    build.set(
        "FORGE_ARTIFACTS_URL",
        &format!("file://{}", artifacts.path().display()),
    );
    let mut child = build
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let heartbeat = build.workspace().join("heartbeat");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !heartbeat.exists() {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{stdout}");
    assert!(!stdout.contains("never-runs"));
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert_eq!(description, "cancelled by SIGTERM during test: `server`");
    // Nothing of the build survives: the heartbeat stops.
    std::thread::sleep(Duration::from_millis(300));
    let before = std::fs::read_to_string(&heartbeat).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        before,
        std::fs::read_to_string(&heartbeat).unwrap(),
        "a build process survived cancellation"
    );
    // What it had is still uploaded.
    let log = artifacts
        .path()
        .join(format!("octo/hello/{SHA}/execute/b1/build.log"));
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("==> [test 1/2] server"));
}

#[test]
fn a_gigabyte_of_output_streams_in_constant_memory() {
    let build = HostBuild::new(concat!(
        "secrets: [NOT_SET_ANYWHERE]\n",
        "execute:\n",
        "  - yes 'a line of build output that goes on for a while, like a noisy compiler' | head -c 1073741824\n",
    ));
    let mut child = build
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let _ = child.try_wait();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "build failed: {status}"
    );
    // ru_maxrss (KiB) covers forgexec and the commands it waited for.
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    eprintln!("peak RSS while streaming 1 GiB: {peak_mib:.1} MiB");
    assert!(
        peak_mib < 64.0,
        "memory grew with output volume: peak {peak_mib:.1} MiB"
    );
    let (state, _) = final_status(&build.statuses());
    assert_eq!(state, "success");
}

/// A zip as GitHub serves it: everything under one top folder.
fn zipball(top: &str, files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.add_directory(format!("{top}/"), zip::write::SimpleFileOptions::default())
        .unwrap();
    for (path, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(format!("{top}/{path}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn an_empty_workspace_is_fetched_from_the_zipball() {
    let build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    build.server.set_zipball(zipball(
        "octo-hello-4f2d1c0",
        &[
            (".forge.yml", b"execute:\n  - ./check.sh\n", 0o644),
            ("check.sh", b"#!/bin/sh\necho fetched source runs\n", 0o755),
        ],
    ));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("fetched source runs"), "{}", out.all());
    let mode = std::fs::metadata(build.workspace().join("check.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "the executable bit survives the zipball"
    );
}

#[test]
fn a_zipball_that_escapes_its_folder_is_refused() {
    let build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    build.server.set_zipball(zipball(
        "octo-hello-4f2d1c0",
        &[
            (".forge.yml", b"execute:\n  - echo hi\n", 0o644),
            ("../../escaped", b"gotcha", 0o644),
        ],
    ));
    let out = build.run();
    // The pull request's content is refused: invalid input, not the
    // infrastructure's failure.
    assert_eq!(out.code, 2, "{}", out.all());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert!(
        description.starts_with("unsafe source archive: refusing archive entry"),
        "{description}"
    );
    assert!(!build.dir.path().join("escaped").exists());
}

/// `zipball` plus symlinks (`path`, `target`) under the top folder.
fn zipball_with_links(top: &str, files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new_append(std::io::Cursor::new(zipball(top, files))).unwrap();
    for (path, target) in links {
        zip.add_symlink(
            format!("{top}/{path}"),
            *target,
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    }
    zip.finish().unwrap().into_inner()
}

#[test]
fn a_symlink_chain_out_of_the_workspace_is_refused() {
    // issue 11: each link is lexically inside the workspace, but `l1` is
    // the workspace itself, so `.forge.yml` really names a file outside.
    let build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    let outside = build.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let marker = build.dir.path().join("outside-spec-ran");
    std::fs::write(
        outside.join("evil.yml"),
        format!("execute:\n  - touch {}\n", marker.display()),
    )
    .unwrap();
    // The issue's link: six `..` after `l1` (the workspace) reach `/` from
    // a workspace at most six deep, then the absolute path follows. Read as
    // text, the six `..` only undo `a/b/c/d/e/l1`.
    assert!(build.workspace().components().count() <= 7);
    let evil = format!(
        "a/b/c/d/e/l1/../../../../../../{}",
        outside
            .join("evil.yml")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    build.server.set_zipball(zipball_with_links(
        "octo-hello-4f2d1c0",
        &[("README.md", b"hello\n", 0o644)],
        &[("a/b/c/d/e/l1", "../../../../.."), (".forge.yml", &evil)],
    ));
    let out = build.run();
    assert!(!marker.exists(), "a .forge.yml outside the workspace ran");
    assert_eq!(out.code, 2, "{}", out.all());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert!(
        description.starts_with(
            "unsafe source archive: refusing archive entry \"octo-hello-4f2d1c0/.forge.yml\""
        ),
        "{description}"
    );
    assert!(
        out.stderr.contains("leads outside the workspace"),
        "{}",
        out.all()
    );
}

#[test]
fn a_zip_bomb_is_refused_naming_the_limit_and_its_variable() {
    // issue 11: a small zip of zeros wrote gigabytes. 4 MiB of zeros
    // deflate about 1000:1.
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let spec: &[u8] = b"execute:\n  - echo unpacked\n";
    let bomb = zipball(
        "octo-hello-4f2d1c0",
        &[(".forge.yml", spec, 0o644), ("zeros", &zeros, 0o644)],
    );
    let build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    build.server.set_zipball(bomb.clone());
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    let (state, description) = final_status(&build.statuses());
    assert_eq!(state, "error");
    assert!(
        description
            .starts_with("unsafe source archive: entry \"octo-hello-4f2d1c0/zeros\" expands "),
        "{description}"
    );
    assert!(
        description.ends_with(":1, more than 200:1 (FORGE_UNPACK_MAX_RATIO raises the limit)"),
        "{description}"
    );
    assert!(!build.workspace().join("zeros").exists());

    // The total: named with its variable too.
    let mut build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    build.server.set_zipball(bomb.clone());
    build.set("FORGE_UNPACK_MAX_RATIO", "100000");
    build.set("FORGE_UNPACK_MAX_BYTES", "1MiB");
    let out = build.run();
    assert_eq!(out.code, 2, "{}", out.all());
    assert_eq!(
        final_status(&build.statuses()),
        (
            "error".into(),
            "unsafe source archive: it unpacks to more than 1048576 bytes (FORGE_UNPACK_MAX_BYTES raises the limit)".into()
        )
    );

    // Raised, the same archive builds.
    let mut build = HostBuild::new("unused: true\n");
    std::fs::remove_dir_all(build.workspace()).unwrap();
    build.server.set_zipball(bomb);
    build.set("FORGE_UNPACK_MAX_RATIO", "100000");
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("unpacked"), "{}", out.all());
}

#[test]
fn statuses_survive_forge_faults_and_a_lost_final_status_is_exit_4() {
    let build = HostBuild::new("execute:\n  - echo ok\n");
    build.server.fault(Route::Statuses, Fault::status(502));
    build.server.fault(Route::Statuses, Fault::Reset);
    build.server.fault(Route::Statuses, Fault::rate_limited(1));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(final_status(&build.statuses()).0, "success");

    let mut build = HostBuild::new("execute:\n  - echo ok\n");
    std::fs::write(build.token_file(), "wrong-token").unwrap();
    build.set("FORGE_BUILD_ID", "b2");
    let out = build.run();
    assert_eq!(out.code, 4, "{}", out.all());
    assert!(out.stderr.contains("Bad credentials"), "{}", out.all());
}

#[test]
fn artifacts_are_packed_with_excludes_and_uploaded_with_the_log() {
    let nginx = Nginx::start();
    let mut build = HostBuild::new(concat!(
        "execute:\n",
        "  - mkdir -p out/sub && echo report > out/report.txt && echo tmp > out/sub/x.tmp && echo keep > out/sub/keep.txt\n",
        "  - ln -s /etc/passwd out/escape\n",
        "artifacts:\n",
        "  paths: [out]\n",
        "  exclude: ['**/*.tmp']\n",
    ));
    build.set("FORGE_ARTIFACTS_URL", &format!("{}/builds", nginx.url()));
    let out = build.run();
    assert!(
        out.stdout.contains("out/escape"),
        "the refused link is named:\n{}",
        out.all()
    );
    let object = nginx
        .root()
        .join(format!("builds/octo/hello/{SHA}/execute/b1"));
    let zip_bytes = std::fs::read(object.join("artifacts.zip")).expect("artifacts.zip uploaded");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["out/report.txt", "out/sub/keep.txt"],
        "{}",
        out.all()
    );
    assert_eq!(
        nginx.checksum_header("/execute/b1/artifacts.zip"),
        sha256sum(&object.join("artifacts.zip")),
        "X-Checksum-Sha256 is the stored zip's"
    );
    let log = std::fs::read_to_string(object.join("build.log")).expect("build.log uploaded");
    assert!(log.contains("==> [test 1/2]"), "{log}");
    assert_eq!(
        nginx.checksum_header("/execute/b1/build.log"),
        sha256sum(&object.join("build.log"))
    );
    let (_, description) = final_status(&build.statuses());
    let target = build.server.statuses(SHA).last().unwrap()["target_url"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        target.ends_with("/build.log"),
        "final status links the log: {target} ({description})"
    );
}

fn docker_forge_env(server: &ForgeServer) -> Vec<String> {
    [
        ("FORGE_OWNER", "octo".to_string()),
        ("FORGE_REPO", "hello".to_string()),
        ("FORGE_SHA", SHA.to_string()),
        ("FORGE_API_URL", server.url()),
        (
            "FORGE_STATUS_URL",
            format!("{}/repos/octo/hello/statuses/{SHA}", server.url()),
        ),
    ]
    .into_iter()
    .flat_map(|(k, v)| ["-e".to_string(), format!("{k}={v}")])
    .collect()
}

fn docker_run(image: &Image, server: &ForgeServer, extra: &[&str]) -> Container {
    let mut args: Vec<String> = vec!["--network".into(), "host".into()];
    args.extend(docker_forge_env(server));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(image.tag().to_string());
    args.push("/forgexec".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run_detached(&args)
}

#[test]
fn runs_as_pid_1_in_an_empty_image_with_exec_form_commands() {
    pid_1_in_an_empty_image(&Platform::host());
}

pub(crate) fn pid_1_in_an_empty_image(platform: &Platform) {
    docker_ready();
    let server = ForgeServer::start(TOKEN);
    server.set_zipball(zipball(
        "octo-hello-4f2d1c0",
        &[(".forge.yml", b"execute:\n  - [\"/busybox\", \"echo\", \"hello from an empty root\"]\n  - [\"/busybox\", \"ls\", \"/\"]\n", 0o644)],
    ));
    let root = tempfile::tempdir().unwrap();
    let token = root.path().join("token-src");
    std::fs::write(&token, TOKEN).unwrap();
    let rootfs = root.path().join("rootfs");
    empty_rootfs_with(
        &rootfs,
        &[
            (&platform.forgexec, "/forgexec", 0o755),
            (&platform.busybox, "/busybox", 0o755),
            (&token, "/forge/token", 0o400),
        ],
    );
    let image = platform.import(&unique_name("forgexec-empty"), &rootfs);
    let container = docker_run(&image, &server, &[]);
    let code = container.wait();
    let (stdout, stderr) = container.logs();
    assert_eq!(code, 0, "--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("hello from an empty root"), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l == "token"),
        "the token file must be gone: {stdout}"
    );
    assert_eq!(final_status(&states(&server.statuses(SHA))).0, "success");
}

#[test]
fn runs_shell_form_in_busybox_and_hides_its_memory_from_commands() {
    pid_1_shell_form_hides_its_memory(&Platform::host());
}

pub(crate) fn pid_1_shell_form_hides_its_memory(platform: &Platform) {
    docker_ready();
    let server = ForgeServer::start(TOKEN);
    server.set_zipball(zipball(
        "octo-hello-4f2d1c0",
        &[(
            ".forge.yml",
            concat!(
                "execute:\n",
                "  - echo \"sum=$((1 + 2))\" | tr = x\n",
                "  - test ! -e /forge/token && echo token-file-gone\n",
                "  - cat /proc/1/environ /proc/$PPID/environ 2>&1 | grep -q ghs_ && echo LEAKED || echo environ-protected\n",
                "  - head -c 100 /proc/1/mem >/dev/null 2>&1 && echo LEAKED || echo mem-protected\n",
                "  - grep -q CI=true /proc/self/environ && echo self-readable\n",
                "  - (sh -c 'sleep 0.2 &' &) ; sleep 1; echo zombies=$(grep -l ') Z ' /proc/[0-9]*/stat 2>/dev/null | wc -l)\n",
            )
            .as_bytes(),
            0o644,
        )],
    ));
    let root = tempfile::tempdir().unwrap();
    let rootfs = root.path().join("rootfs");
    platform.busybox_rootfs(&rootfs);
    empty_rootfs_with(&rootfs, &[(&platform.forgexec, "/forgexec", 0o755)]);
    let image = platform.import(&unique_name("forgexec-busybox"), &rootfs);
    let token_env = format!("FORGE_TOKEN={TOKEN}");
    let container = docker_run(&image, &server, &["-e", &token_env]);
    let code = container.wait();
    let (stdout, stderr) = container.logs();
    assert_eq!(code, 0, "--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains("sumx3"), "{stdout}");
    assert!(stdout.contains("environ-protected"), "{stdout}");
    assert!(stdout.contains("mem-protected"), "{stdout}");
    assert!(!stdout.lines().any(|l| l == "LEAKED"), "{stdout}");
    // As PID 1, forgexec reaps the orphans commands leave behind.
    assert!(stdout.contains("zombies=0"), "{stdout}");
    // Control: the same reads work on a dumpable process.
    assert!(stdout.contains("self-readable"), "{stdout}");
    assert_eq!(final_status(&states(&server.statuses(SHA))).0, "success");
}

#[test]
fn docker_stop_cancels_a_pid_1_build_with_a_final_status() {
    pid_1_docker_stop_cancels(&Platform::host());
}

pub(crate) fn pid_1_docker_stop_cancels(platform: &Platform) {
    docker_ready();
    let server = ForgeServer::start(TOKEN);
    server.set_zipball(zipball(
        "octo-hello-4f2d1c0",
        &[(
            ".forge.yml",
            b"execute:\n  - name: forever\n    run: \"sleep 1000 & sleep 1000\"\n",
            0o644,
        )],
    ));
    let root = tempfile::tempdir().unwrap();
    let rootfs = root.path().join("rootfs");
    platform.busybox_rootfs(&rootfs);
    empty_rootfs_with(&rootfs, &[(&platform.forgexec, "/forgexec", 0o755)]);
    let image = platform.import(&unique_name("forgexec-cancel"), &rootfs);
    let container = docker_run(
        &image,
        &server,
        &[
            "-e",
            "FORGE_GRACE=2s",
            "-e",
            &format!("FORGE_TOKEN={TOKEN}"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !states(&server.statuses(SHA))
        .iter()
        .any(|(_, d)| d.starts_with("test:"))
    {
        assert!(
            Instant::now() < deadline,
            "the build never reached its test stage: {:?}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    docker(&["stop", "-t", "20", container.id()]);
    let code = container.wait();
    let (stdout, stderr) = container.logs();
    assert_eq!(code, 143, "--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert_eq!(
        final_status(&states(&server.statuses(SHA))),
        (
            "error".into(),
            "cancelled by SIGTERM during test: `forever`".into()
        )
    );
}

#[test]
fn when_decides_whether_artifacts_are_collected_and_no_match_is_said() {
    let artifacts = tempfile::tempdir().unwrap();
    let base = format!("file://{}", artifacts.path().display());
    let mut build = HostBuild::new(
        "execute:\n  - echo x > report.txt\nartifacts:\n  paths: [report.txt]\n  when: on_failure\n",
    );
    build.set("FORGE_ARTIFACTS_URL", &base);
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("==> [artifacts] skipped (`when` does not match this outcome)"),
        "{}",
        out.all()
    );
    let prefix = artifacts
        .path()
        .join(format!("octo/hello/{SHA}/execute/b1"));
    assert!(!prefix.join("artifacts.zip").exists());
    assert!(
        prefix.join("build.log").exists(),
        "the log is uploaded whatever `when` says"
    );

    let mut build = HostBuild::new(
        "execute:\n  - echo x > report.txt && exit 1\nartifacts:\n  paths: [report.txt, 'missing/**']\n  when: on_failure\n",
    );
    build.set("FORGE_ARTIFACTS_URL", &base);
    build.set("FORGE_BUILD_ID", "b2");
    let out = build.run();
    assert_eq!(out.code, 1, "{}", out.all());
    let zip = artifacts
        .path()
        .join(format!("octo/hello/{SHA}/execute/b2/artifacts.zip"));
    let archive =
        zip::ZipArchive::new(std::fs::File::open(&zip).expect("collected after the failure"))
            .unwrap();
    assert_eq!(archive.len(), 1);

    let mut build = HostBuild::new("execute:\n  - 'true'\nartifacts: ['dist/*.tar.gz']\n");
    build.set("FORGE_ARTIFACTS_URL", &base);
    build.set("FORGE_BUILD_ID", "b3");
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("==> [artifacts] no files matched dist/*.tar.gz"),
        "{}",
        out.all()
    );
}

/// The status requests the forge received (accepted or not), in order.
fn status_requests(server: &ForgeServer) -> Vec<RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.route == Some(Route::Statuses))
        .collect()
}

/// Consecutive status writes are at least a second apart, as GitHub asks.
fn assert_spaced(server: &ForgeServer) {
    let requests = status_requests(server);
    for pair in requests.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(950),
            "two status writes {gap:?} apart: {:?}",
            requests.iter().map(|r| r.at).collect::<Vec<_>>()
        );
    }
}

#[test]
fn hostile_retry_after_values_never_abort_and_waits_fit_the_budget() {
    // Issue 11: this date overflowed the clock; forgexec aborted (134)
    // without a final status.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    for value in [
        "99999999999999999999999999",
        "Sun, 06 Nov 400000000000 08:49:37 GMT",
        "garbage",
        "-5",
    ] {
        build.server.fault(
            Route::Statuses,
            Fault::answer(
                503,
                &[("retry-after", value)],
                r#"{"message":"Service Unavailable"}"#,
            ),
        );
    }
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(final_status(&build.statuses()).0, "success");

    // A valid date years ahead: the final status does not wait for it; it
    // gives up at once, well inside its 30 s budget, and says so.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    for _ in 0..20 {
        build.server.fault(
            Route::Statuses,
            Fault::secondary_rate_limit(403, "Fri, 31 Dec 9999 23:59:59 GMT"),
        );
    }
    let started = Instant::now();
    let out = build.run();
    let took = started.elapsed();
    assert_eq!(out.code, 4, "{}", out.all());
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}\n{}",
        out.all()
    );
    assert!(out.stderr.contains("budget"), "{}", out.all());
}

#[test]
fn github_rate_limits_are_waited_out_and_a_plain_403_stays_final() {
    // Secondary rate limit (403 with retry-after) on the first pending
    // status: the other pending ones are skipped while the limit holds, and
    // the final one waits it out.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    build
        .server
        .fault(Route::Statuses, Fault::secondary_rate_limit(403, "3"));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    let statuses = build.statuses();
    assert_eq!(final_status(&statuses).0, "success");
    assert_eq!(
        statuses.len(),
        1,
        "pending updates are skipped while limited: {statuses:?}"
    );
    let requests = status_requests(&build.server);
    assert_eq!(requests.len(), 2, "one limited, one final");
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(
        waited >= Duration::from_millis(2900),
        "the final status came {waited:?} after the limit began"
    );

    // Primary rate limit on the final status itself: 403,
    // x-ratelimit-remaining 0, reset in a few seconds.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    build
        .server
        .fault_final_status(Fault::primary_rate_limit(403, Duration::from_secs(3)));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(final_status(&build.statuses()).0, "success");
    assert_spaced(&build.server);

    // 429 with retry-after, GitHub's other answer to the same limit.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    build
        .server
        .fault_final_status(Fault::secondary_rate_limit(429, "1"));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(final_status(&build.statuses()).0, "success");
    assert_spaced(&build.server);

    // A 403 that is no rate limit is final: one attempt, exit 4 (passed,
    // final status not posted).
    let build = HostBuild::new("execute:\n  - echo ok\n");
    build.server.fault_final_status(Fault::forbidden());
    let out = build.run();
    assert_eq!(out.code, 4, "{}", out.all());
    assert!(
        out.stderr
            .contains("Resource not accessible by integration"),
        "{}",
        out.all()
    );
    let finals = status_requests(&build.server)
        .into_iter()
        .filter(|r| r.json.as_ref().is_some_and(|j| j["state"] != "pending"))
        .count();
    assert_eq!(finals, 1, "the forbidden final status is not retried");
}

#[test]
fn the_final_status_goes_first_when_pending_ones_are_stuck() {
    // Every pending update fails for a while; the final status must not
    // wait behind their retries, and no pending one may follow it.
    let build = HostBuild::new("execute:\n  - echo ok\n");
    for _ in 0..6 {
        build.server.fault(Route::Statuses, Fault::status(503));
    }
    let started = Instant::now();
    let out = build.run();
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.all());
    let statuses = build.statuses();
    assert_eq!(final_status(&statuses).0, "success");
    assert!(
        !statuses
            .iter()
            .any(|(state, text)| state == "pending" && text.starts_with("test:")),
        "the unsent pending update was dropped, not posted before the final: {statuses:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_spaced(&build.server);
}

#[test]
fn a_forge_echoing_the_token_never_puts_it_on_the_console() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    let url_b64 = base64::engine::general_purpose::URL_SAFE.encode(format!("x{TOKEN}"));
    let body = serde_json::json!({
        "message": format!("Bad credentials: Bearer {TOKEN} b64={b64} u={url_b64}"),
        "documentation_url": "https://docs.github.com/rest",
    })
    .to_string();
    let mut build = HostBuild::new(concat!(
        "secrets: [API_KEY]\n",
        "execute:\n",
        "  - printf '%s' \"$API_KEY\" | base64\n",
        "  - printf 'x%s' \"$API_KEY\" | base64 | tr '+/' '-_'\n",
        "  - echo \"q=k3y%2Fthat%20must%20not%20leak\"\n",
    ));
    build.set("API_KEY", "k3y/that must not leak");
    let artifacts = tempfile::tempdir().unwrap();
    build.set(
        "FORGE_ARTIFACTS_URL",
        &format!("file://{}", artifacts.path().display()),
    );
    for _ in 0..3 {
        build
            .server
            .fault(Route::Statuses, Fault::answer(401, &[], &body));
    }
    let out = build.run();
    assert_eq!(out.code, 4, "{}", out.all());
    assert!(out.stderr.contains("Bad credentials"), "{}", out.all());
    let log = std::fs::read_to_string(
        artifacts
            .path()
            .join(format!("octo/hello/{SHA}/execute/b1/build.log")),
    )
    .unwrap();
    let key_b64 = base64::engine::general_purpose::STANDARD.encode("k3y/that must not leak");
    let key_url_b64 = base64::engine::general_purpose::URL_SAFE.encode("xk3y/that must not leak");
    for text in [&out.stdout, &out.stderr, &log] {
        for leak in [
            TOKEN,
            &b64,
            &url_b64,
            &key_b64,
            &key_url_b64,
            "k3y%2Fthat%20must",
        ] {
            assert!(
                !text.contains(leak),
                "{leak} leaked:\n{}\n--- log\n{log}",
                out.all()
            );
        }
    }
    assert!(log.contains("q=***"), "{log}");
}

#[test]
fn credentials_in_the_artifacts_url_are_never_shown_nor_linked() {
    let nginx = Nginx::start();
    let mut build = HostBuild::new(
        "execute:\n  - mkdir -p out && echo r > out/r.txt\nartifacts:\n  paths: [out]\n",
    );
    let url = nginx
        .url()
        .replacen("http://", "http://builder:PA55-w0rd-x@", 1);
    build.set("FORGE_ARTIFACTS_URL", &format!("{url}/builds"));
    let out = build.run();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("uploaded to http://***@"),
        "{}",
        out.all()
    );
    let object = nginx
        .root()
        .join(format!("builds/octo/hello/{SHA}/execute/b1"));
    let log = std::fs::read_to_string(object.join("build.log")).expect("build.log uploaded");
    for text in [&out.stdout, &out.stderr, &log] {
        assert!(
            !text.contains("PA55-w0rd-x"),
            "{}\n--- log\n{log}",
            out.all()
        );
    }
    for status in build.server.statuses(SHA) {
        assert_eq!(
            status["target_url"],
            Value::Null,
            "a URL with credentials is no status link: {status}"
        );
    }
}
