//! Sidecar services (`services:`) with the real daemon in swarm mode and in
//! local mode: a busybox `httpd` beside the build, reached by name and by
//! 127.0.0.1; a service that never listens; nothing left behind; the
//! services' output in the build log (not ready, exited, failed build,
//! masked secrets).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    busybox_rootfs, docker, import_image_with, static_forgexec, unique_name, Nginx,
};
use crate::launch_swarm::{guard_all, launcher, run, states, text, Fixture, OWNER};

/// A fixture whose `.forge.yml` is `body(image)`, the services using the
/// same busybox image as the build.
fn fixture(body: impl Fn(&str) -> String) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let image = import_image_with(
        &format!("{}:1", unique_name("forge-sidecar-bb")),
        &rootfs,
        &[],
    );
    let tag = image.tag().to_string();
    Fixture::with_image(&body(&tag), dir, image)
}

/// A loopback port that nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Sidecar containers of this fixture's repository, running or not.
fn sidecars(fx: &Fixture) -> Vec<String> {
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

/// A busybox `httpd` on `port` that starts listening after `delay` seconds.
fn web_service(image: &str, port: u16, delay: u32) -> String {
    format!(
        "services:\n  web:\n    image: {image}\n    command: [sh, -c, \"sleep {delay}; mkdir -p /srv && echo served-by-web > /srv/index.html && exec httpd -f -p {port} -h /srv\"]\n    ports: [{port}]\n"
    )
}

#[test]
fn a_build_talks_to_its_service_by_name_and_by_loopback_then_it_is_gone() {
    let port = free_port();
    let fx = fixture(|image| {
        format!(
            "{}execute:\n  - wget -qO- http://web:{port}/\n  - wget -qO- http://127.0.0.1:{port}/\n",
            web_service(image, port, 3)
        )
    });
    let out = run(&mut fx.swarm(41, &["--wait"]));
    let _guards = guard_all(&fx.services(41));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("served-by-web").count(), 2, "{}", text(&out));
    // The service listens after 3 s: the wait outlasts the statuses'
    // spacing, so its pending status is posted.
    let statuses = fx.forge.statuses(&fx.sha);
    assert!(
        statuses
            .iter()
            .any(|s| s["description"] == format!("waiting for services: web:{port}")),
        "{:?}",
        states(&statuses)
    );
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success")
    );
    assert!(sidecars(&fx).is_empty(), "sidecars removed with the build");
}

/// The build log the build uploaded to `nginx`.
fn build_log(fx: &Fixture, nginx: &Nginx) -> String {
    let files = fx.stored_artifacts(nginx.root(), "execute");
    let log = files
        .iter()
        .find(|f| f.ends_with("build.log"))
        .unwrap_or_else(|| panic!("no build.log uploaded: {files:?}"));
    std::fs::read_to_string(log).expect("read build.log")
}

#[test]
fn a_service_that_never_listens_ends_the_build_with_an_error_naming_it() {
    let port = free_port();
    let fx = fixture(|image| {
        format!(
            "services:\n  db:\n    image: {image}\n    command: [sh, -c, \"echo db-starting; echo db-cannot-bind-{port}; exec sleep 600\"]\n    ports: [{port}]\n    wait: 2s\nexecute:\n  - touch ran\n"
        )
    });
    let nginx = Nginx::start();
    let out = run(&mut fx.swarm(42, &["--wait", "--artifacts-url", &nginx.url()]));
    let _guards = guard_all(&fx.services(42));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let statuses = fx.forge.statuses(&fx.sha);
    let last = statuses.last().expect("statuses");
    assert_eq!(last["state"], "error", "{:?}", states(&statuses));
    assert_eq!(
        last["description"],
        format!("service `db` not ready on :{port} after 2s")
    );
    assert!(sidecars(&fx).is_empty(), "no sidecar left behind");
    // Its output, in the build log and on the console.
    let log = build_log(&fx, &nginx);
    let expected = format!("[db] db-starting\n[db] db-cannot-bind-{port}\n");
    assert!(log.contains(&expected), "{log}");
    assert!(
        log.contains("==> last 2 line(s) of service `db` (running):"),
        "{log}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&expected),
        "{}",
        text(&out)
    );
}

#[test]
fn a_service_that_exits_during_the_build_is_reported_and_the_build_decides() {
    let fx = fixture(|image| {
        format!(
            "services:\n  quitter:\n    image: {image}\n    command: [sh, -c, \"echo giving-up; exit 7\"]\nexecute:\n  - sleep 4\n  - echo build-went-on\n"
        )
    });
    let nginx = Nginx::start();
    let out = run(&mut fx.swarm(45, &["--wait", "--artifacts-url", &nginx.url()]));
    let _guards = guard_all(&fx.services(45));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success")
    );
    let log = build_log(&fx, &nginx);
    assert!(
        log.contains("==> service `quitter` exited with code 7 during the build\n"),
        "{log}"
    );
    assert!(log.contains("build-went-on"), "{log}");
    // A passing build does not append the services' output.
    assert!(!log.contains("[quitter] giving-up"), "{log}");
    assert!(sidecars(&fx).is_empty(), "sidecars removed with the build");
}

#[test]
fn a_failing_build_gets_its_services_last_lines_with_secrets_masked() {
    let port = free_port();
    let secret = format!("svc-{}", unique_name("secret"));
    let fx = fixture(|image| {
        format!(
            "secrets: [SERVICE_PASSWORD]\nservices:\n  web:\n    image: {image}\n    environment:\n      SERVICE_PASSWORD: {secret}\n    command: [sh, -c, \"echo password is $SERVICE_PASSWORD; echo web-ready; exec httpd -f -p {port} -h /\"]\n    ports: [{port}]\n  quiet:\n    image: {image}\n    command: [sleep, \"600\"]\nexecute:\n  - sleep 3\n  - echo tests fail\n  - exit 1\n"
        )
    });
    let nginx = Nginx::start();
    let out = run(&mut fx.swarm(46, &["--wait", "--artifacts-url", &nginx.url()]));
    let _guards = guard_all(&fx.services(46));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:failure")
    );
    let log = build_log(&fx, &nginx);
    assert!(
        log.contains("==> last 2 line(s) of service `web` (running):\n[web] password is ***\n[web] web-ready\n"),
        "{log}"
    );
    assert!(
        log.contains("==> service `quiet` (running) printed nothing"),
        "{log}"
    );
    assert!(
        !log.contains(&secret),
        "the secret leaked into the log:\n{log}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&secret),
        "the secret leaked to the console"
    );
    assert!(sidecars(&fx).is_empty(), "sidecars removed with the build");
}

#[test]
fn local_mode_runs_services_beside_the_container() {
    let port = free_port();
    let fx = fixture(|image| {
        format!(
            "{}execute:\n  - wget -qO- http://web:{port}/\n",
            web_service(image, port, 0)
        )
    });
    let repo = format!("{OWNER}/{}", fx.repo);
    let out = run(Command::new(launcher())
        .args(["local", "--repo", &repo, "--network", "host"])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--artifacts-dir")
        .arg(fx.dir.path().join("artifacts"))
        .arg("--forgexec")
        .arg(static_forgexec()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("served-by-web"),
        "{}",
        text(&out)
    );
    assert!(
        sidecars(&fx).is_empty(),
        "sidecars removed with the container"
    );
}

#[test]
fn local_mode_appends_a_failing_builds_service_output() {
    let port = free_port();
    let fx = fixture(|image| {
        format!(
            "services:\n  web:\n    image: {image}\n    command: [sh, -c, \"echo local-web-up; exec httpd -f -p {port} -h /\"]\n    ports: [{port}]\nexecute:\n  - exit 1\n"
        )
    });
    let repo = format!("{OWNER}/{}", fx.repo);
    let artifacts = fx.dir.path().join("artifacts");
    let out = run(Command::new(launcher())
        .args(["local", "--repo", &repo, "--network", "host"])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--artifacts-dir")
        .arg(&artifacts)
        .arg("--forgexec")
        .arg(static_forgexec()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = std::fs::read_to_string(artifacts.join("build.log")).expect("build.log copied out");
    assert!(
        log.contains("==> last 1 line(s) of service `web` (running):\n[web] local-web-up\n"),
        "{log}"
    );
    assert!(
        sidecars(&fx).is_empty(),
        "sidecars removed with the container"
    );
}

#[test]
fn gc_reaps_the_services_of_a_build_nobody_waited_for() {
    let port = free_port();
    let fx = fixture(|image| {
        format!(
            "{}execute:\n  - wget -qO- http://web:{port}/\n",
            web_service(image, port, 0)
        )
    });
    let out = run(&mut fx.swarm(43, &[]));
    let _guards = guard_all(&fx.services(43));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let statuses = fx.final_statuses(Duration::from_secs(60));
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success")
    );
    // Nobody waited: the sidecar outlives the build until gc.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sidecars(&fx).is_empty() {
        assert!(Instant::now() < deadline, "the sidecar never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let repo = format!("{OWNER}/{}", fx.repo);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gc = run(Command::new(launcher()).args(["gc", "--older-than", "0s", "--repo", &repo]));
        assert_eq!(gc.status.code(), Some(0), "{}", text(&gc));
        if sidecars(&fx).is_empty() {
            break;
        }
        // The build container may still be finishing its uploads.
        assert!(
            Instant::now() < deadline,
            "gc left the sidecar: {:?}",
            sidecars(&fx)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn gc_leaves_the_services_of_a_build_being_launched() {
    // The launcher makes the sidecars before it starts the build container
    // (which, in a swarm, may have failed its first start by then), and
    // starts them after.
    let fx = fixture(|_| "execute:\n  - 'true'\n".to_string());
    let tag = fx.image.tag().to_string();
    let repo = format!("{OWNER}/{}", fx.repo);
    let build = crate::common::Container::create(&[&tag, "true"]);
    let label = |key: &str, value: &str| format!("{key}={value}");
    let sidecar = crate::common::Container::create(&[
        "--label",
        &label("forge.sidecar.of", &unique_name("build")),
        "--label",
        &label("forge.sidecar.container", build.id()),
        "--label",
        &label("forge.repo", &repo),
        &tag,
        "sleep",
        "600",
    ]);
    let gc = || {
        let out = run(Command::new(launcher()).args(["gc", "--older-than", "0s", "--repo", &repo]));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    gc();
    assert_eq!(sidecars(&fx), [sidecar.id()[..12].to_string()]);
    // Started beside a build container that does not run: a leftover.
    docker(&["start", sidecar.id()]);
    gc();
    assert!(sidecars(&fx).is_empty(), "{:?}", sidecars(&fx));
}

#[test]
fn a_newer_push_removes_the_older_builds_services() {
    let port = free_port();
    let fx = fixture(|image| format!("{}execute:\n  - sleep 120\n", web_service(image, port, 0)));
    let first = run(&mut fx.swarm(44, &[]));
    let _first = guard_all(&fx.services(44));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sidecars(&fx).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first build's sidecar never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = sidecars(&fx);

    let sha = fx.push("execute:\n  - echo second\n");
    let second = run(&mut fx.swarm_at(&sha, 44, &["--wait"]));
    let _second = guard_all(&fx.services(44));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let left: Vec<String> = sidecars(&fx)
        .into_iter()
        .filter(|id| old.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "the older build's sidecar is still there: {left:?}"
    );
}

/// `FORGE_SIDECAR_LATENCY_RUNS` or `default`.
fn runs(default: usize) -> usize {
    std::env::var("FORGE_SIDECAR_LATENCY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Seconds from the build container's start (its PID 1's start time) to
/// its first `setup` command, which prints both (`STARTED=` in clock ticks
/// since boot, `UPTIME=` in seconds since boot).
fn start_to_setup(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with("STARTED="))?;
    let mut fields = line.split_whitespace();
    let started: f64 = fields.next()?.strip_prefix("STARTED=")?.parse().ok()?;
    let uptime: f64 = fields.next()?.strip_prefix("UPTIME=")?.parse().ok()?;
    // SAFETY: sysconf takes a plain integer argument.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(uptime - started / ticks)
}

fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2] * 1000.0
}

/// Issue 13's figure: the time from the build container's start to its
/// first `setup` command with one service that is ready at once, against
/// the same build without it, interleaved, in local mode (the sidecars
/// start the same way in swarm mode). `benches/sidecar_latency.sh` runs it
/// in release with more runs and reports the medians.
#[test]
fn a_service_ready_at_once_adds_little_before_the_first_setup_command() {
    let runs = runs(2);
    let port = free_port();
    let setup = "setup:\n  - echo STARTED=$(cut -d' ' -f22 /proc/1/stat) UPTIME=$(cut -d' ' -f1 /proc/uptime)\nexecute:\n  - 'true'\n";
    let fx = fixture(|image| {
        format!(
            "services:\n  web:\n    image: {image}\n    command: [httpd, -f, -p, \"{port}\", -h, /]\n    ports: [{port}]\n{setup}"
        )
    });
    let with_services = fx.dir.path().join("with");
    let without = fx.dir.path().join("without");
    for (dir, spec) in [
        (
            &with_services,
            std::fs::read_to_string(fx.git.dir().join(".forge.yml")).expect("read .forge.yml"),
        ),
        (&without, format!("image: {}\n{setup}", fx.image.tag())),
    ] {
        let git = crate::common::GitRepo::init(dir);
        git.write(".forge.yml", &spec);
        git.commit("latency");
    }
    let repo = format!("{OWNER}/{}", fx.repo);
    let measure = |dir: &std::path::Path| {
        let out = run(Command::new(launcher())
            .args(["local", "--repo", &repo])
            .arg("--dir")
            .arg(dir)
            .arg("--artifacts-dir")
            .arg(dir.join("artifacts"))
            .arg("--forgexec")
            .arg(static_forgexec()));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        start_to_setup(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| panic!("no STARTED= line:\n{}", text(&out)))
    };
    let (mut with, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with.push(measure(&with_services));
        bare.push(measure(&without));
    }
    let (with_ms, bare_ms) = (median_ms(&mut with), median_ms(&mut bare));
    eprintln!(
        "sidecar latency: {runs} runs each, container start to first setup command, median \
         with one service {with_ms:.0} ms, without {bare_ms:.0} ms, added {:.0} ms",
        with_ms - bare_ms
    );
    for t in with.iter().chain(&bare) {
        assert!(*t >= 0.0, "a setup command ran before its container: {t}");
    }
    assert!(sidecars(&fx).is_empty(), "sidecars removed with the builds");
}

/// `forgexec sidecar` itself, without Docker: the service's output passes
/// through, its last lines and state are served on the abstract socket,
/// a SIGTERM reaches it, and its exit code is the wrapper's.
#[test]
fn the_wrapper_passes_output_and_signals_through_and_serves_the_tail() {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};

    let build = unique_name("wrapper");
    let mut child = Command::new(env!("CARGO_BIN_EXE_forgexec"))
        .args(["sidecar", "--build", &build, "db", "--", "sh", "-c"])
        .arg("trap 'echo got-term; exit 3' TERM; echo db-up; while :; do sleep 0.05; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start forgexec sidecar");
    let address =
        SocketAddr::from_abstract_name(format!("forge-sidecar/{build}/db")).expect("name");
    let ask = |request: &str| -> String {
        let mut stream = UnixStream::connect_addr(&address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("ask");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = UnixStream::connect_addr(&address)
            .is_ok()
            .then(|| ask("tail\n"));
        if answered.as_deref() == Some("forge-sidecar 1 running\n|db-up\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no tail: {answered:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3));
    // Stopped: it does not stay for a build that never asks.
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    assert_eq!(out, "db-up\ngot-term\n");
}
