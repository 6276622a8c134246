//! `forge-launch swarm` and `local` against the real Docker daemon (swarm
//! mode, single node), the real static forgexec, a loopback forge test
//! server and nginx as the artifact store. Build containers reach
//! 127.0.0.1 through `--network host`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    busybox_rootfs, docker, import_image_with, static_forgexec, unique_name, ForgeServer, GitRepo,
    Image, Nginx, Platform, Service,
};
use serde_json::Value;

pub(crate) const OWNER: &str = "acme";

/// The forge-launch under test: this build's, or `FORGE_LAUNCH` (the
/// benchmarks pass a release build).
pub(crate) fn launcher() -> String {
    std::env::var("FORGE_LAUNCH").unwrap_or_else(|_| env!("CARGO_BIN_EXE_forge-launch").to_string())
}

/// A repository on the forge test server, a busybox image and a token.
/// (Also used by `launch_binary.rs` and `aarch64.rs`.)
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) forge: ForgeServer,
    pub(crate) image: Image,
    pub(crate) repo: String,
    pub(crate) git: GitRepo,
    pub(crate) sha: String,
    pub(crate) token_file: PathBuf,
}

pub(crate) const PASSING: &str = "\
execute:
  - echo building $GREETING > out.txt
  - cat out.txt
artifacts:
  paths: [out.txt]
environment:
  GREETING: hello
";

const FAILING: &str = "\
execute:
  - echo about to fail
  - exit 1
";

impl Fixture {
    /// `body` is the .forge.yml without its `image:` line.
    pub(crate) fn new(body: &str) -> Fixture {
        Fixture::with_image_changes(body, &[])
    }

    /// The same with `docker import --change` instructions for the image.
    fn with_image_changes(body: &str, changes: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let image = import_image_with(
            &format!("{}:1", unique_name("forge-launch-bb")),
            &rootfs,
            changes,
        );
        Fixture::with_image(body, dir, image)
    }

    /// The same in a busybox image of `platform` (another CPU's).
    pub(crate) fn on_platform(body: &str, platform: &Platform) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        platform.busybox_rootfs(&rootfs);
        let tag = format!(
            "{}:1",
            unique_name(&format!("forge-launch-bb-{}", platform.arch))
        );
        let image = platform.import(&tag, &rootfs);
        Fixture::with_image(body, dir, image)
    }

    pub(crate) fn with_image(body: &str, dir: tempfile::TempDir, image: Image) -> Fixture {
        let repo = unique_name("widget");
        let token = format!("tok-{}", unique_name("secret"));
        let forge = ForgeServer::start(&token);
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("write token file");
        let git = GitRepo::init(&dir.path().join("repo"));
        let spec = format!("image: {}\n{body}", image.tag());
        git.write("README", "a repository\n");
        git.write(".forge.yml", &spec);
        let sha = git.commit("initial");
        let fixture = Fixture {
            dir,
            forge,
            image,
            repo,
            git,
            sha,
            token_file,
        };
        fixture.publish(&spec);
        fixture
    }

    /// Serves `spec` and the repository's HEAD as the zipball.
    pub(crate) fn publish(&self, spec: &str) {
        self.forge.set_file(".forge.yml", spec.as_bytes().to_vec());
        let head = self.git.head();
        let prefix = format!("--prefix={OWNER}-{}-{}/", self.repo, &head[..7]);
        let zip = Command::new("git")
            .args(["archive", "--format=zip", &prefix, "HEAD"])
            .current_dir(self.git.dir())
            .output()
            .expect("git archive");
        assert!(zip.status.success(), "git archive failed");
        self.forge.set_zipball(zip.stdout);
    }

    pub(crate) fn status_url(&self) -> String {
        self.status_url_at(&self.sha)
    }

    pub(crate) fn status_url_at(&self, sha: &str) -> String {
        format!(
            "{}/repos/{OWNER}/{}/statuses/{sha}",
            self.forge.url(),
            self.repo
        )
    }

    /// Commits a new .forge.yml (a new push) and serves it; returns the sha.
    pub(crate) fn push(&self, body: &str) -> String {
        let spec = format!("image: {}\n{body}", self.image.tag());
        self.git.write(".forge.yml", &spec);
        let sha = self.git.commit("new push");
        self.publish(&spec);
        sha
    }

    /// `forge-launch swarm` for pull request `pr` with the standard flags.
    pub(crate) fn swarm(&self, pr: u64, extra: &[&str]) -> Command {
        self.swarm_at(&self.sha, pr, extra)
    }

    /// The same for another head commit.
    pub(crate) fn swarm_at(&self, sha: &str, pr: u64, extra: &[&str]) -> Command {
        self.swarm_with(&static_forgexec(), sha, pr, extra)
    }

    /// The same with another `--forgexec`.
    pub(crate) fn swarm_with(
        &self,
        forgexec: &Path,
        sha: &str,
        pr: u64,
        extra: &[&str],
    ) -> Command {
        self.swarm_started_within(forgexec, sha, pr, "60s", extra)
    }

    /// The same with another `--start-timeout`.
    pub(crate) fn swarm_started_within(
        &self,
        forgexec: &Path,
        sha: &str,
        pr: u64,
        start_timeout: &str,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new(launcher());
        let repo = format!("{OWNER}/{}", self.repo);
        cmd.args(["swarm", "--repo", &repo, "--pr", &pr.to_string()])
            .args(["--sha", sha, "--status-url", &self.status_url_at(sha)])
            .args(["--api-url", &self.forge.url()])
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--forgexec")
            .arg(forgexec)
            .args(["--network", "host", "--start-timeout", start_timeout])
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    /// Waits until the build posted a status other than `pending`.
    pub(crate) fn final_statuses(&self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.forge.statuses(&self.sha);
            if statuses.iter().any(|s| s["state"] != "pending") {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "no final status within {timeout:?}: {:?}",
                states(&statuses)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn services(&self, pr: u64) -> Vec<String> {
        let out = docker(&[
            "service",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=forge.repo={OWNER}/{}", self.repo),
            "--filter",
            &format!("label=forge.pull_request={pr}"),
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// The build's files under the artifact store for this sha and action.
    pub(crate) fn stored_artifacts(&self, root: &Path, action: &str) -> Vec<PathBuf> {
        let base = root
            .join(OWNER)
            .join(&self.repo)
            .join(&self.sha)
            .join(action);
        let mut found = Vec::new();
        if let Ok(builds) = std::fs::read_dir(&base) {
            for build in builds.flatten() {
                for file in std::fs::read_dir(build.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    found.push(file.path());
                }
            }
        }
        found.sort();
        found
    }
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Guards every service of a pull request (removed on drop).
pub(crate) fn guard_all(names: &[String]) -> Vec<Service> {
    names.iter().map(|n| Service::guard(n.clone())).collect()
}

pub(crate) fn states(statuses: &[Value]) -> Vec<String> {
    statuses
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["context"].as_str().unwrap_or("?"),
                s["state"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

pub(crate) fn zip_names(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut zip = zip::ZipArchive::new(file).expect("artifacts.zip is a zip");
    let mut names: Vec<String> = (0..zip.len())
        .map(|i| {
            zip.by_index(i)
                .expect("zip entry")
                .name()
                .expect("zip entry name")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

pub(crate) fn read_zip_entry(path: &Path, name: &str) -> String {
    use std::io::Read;
    let file = std::fs::File::open(path).expect("open zip");
    let mut zip = zip::ZipArchive::new(file).expect("zip");
    let mut entry = zip.by_name(name).expect("entry in zip");
    let mut s = String::new();
    entry.read_to_string(&mut s).expect("utf-8 entry");
    s
}

#[test]
fn a_passing_build_runs_end_to_end_and_its_service_is_removed() {
    let fx = Fixture::new(PASSING);
    let nginx = Nginx::start();
    let out = run(&mut fx.swarm(7, &["--wait", "--artifacts-url", &nginx.url()]));
    let _guards = guard_all(&fx.services(7));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("building hello"),
        "logs are followed:\n{}",
        text(&out)
    );

    let statuses = fx.forge.statuses(&fx.sha);
    let seen = states(&statuses);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("forge/execute:pending"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("forge/execute:success"),
        "{seen:?}"
    );

    let files = fx.stored_artifacts(nginx.root(), "execute");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["artifacts.zip", "build.log"], "{files:?}");
    assert_eq!(zip_names(&files[0]), ["out.txt"]);
    assert_eq!(read_zip_entry(&files[0], "out.txt"), "building hello\n");

    assert!(
        fx.services(7).is_empty(),
        "the service is removed after --wait"
    );
}

#[test]
fn an_images_env_cannot_supply_build_facts_or_the_token_file() {
    // The pull request chooses the image: its ENV must not redirect the
    // token (FORGE_API_URL) nor keep /forge/token from being deleted
    // (FORGE_TOKEN_FILE pointing elsewhere).
    let fx = Fixture::with_image_changes(
        "execute:\n  - test ! -e /forge/token && echo token-gone\n",
        &[
            "ENV FORGE_API_URL=http://127.0.0.1:9/evil",
            "ENV FORGE_TOKEN_FILE=/etc/passwd",
            "ENV FORGE_ARTIFACTS_URL=http://127.0.0.1:9/evil-store",
        ],
    );
    let out = run(&mut fx.swarm(8, &["--wait"]));
    let _guards = guard_all(&fx.services(8));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("token-gone"),
        "{}",
        text(&out)
    );
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success"),
        "{:?}",
        states(&statuses)
    );
}

#[test]
fn a_failing_build_exits_1_and_posts_failure() {
    let fx = Fixture::new(FAILING);
    let out = run(&mut fx.swarm(8, &["--wait"]));
    let _guards = guard_all(&fx.services(8));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("about to fail"),
        "{}",
        text(&out)
    );
    let seen = states(&fx.forge.statuses(&fx.sha));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("forge/execute:failure"),
        "{seen:?}"
    );
    assert!(
        fx.services(8).is_empty(),
        "the service is removed after --wait"
    );
}

#[test]
fn without_wait_the_service_name_is_printed_and_the_token_is_not_in_the_spec() {
    let fx = Fixture::new(PASSING);
    let out = run(&mut fx.swarm(9, &[]));
    let services = fx.services(9);
    let _guards = guard_all(&services);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(services, std::slice::from_ref(&name));
    assert!(
        name.starts_with(&format!("forge-{OWNER}-{}-9-", fx.repo)),
        "{name}"
    );

    // The build got the token (the server only accepts statuses carrying it)...
    let statuses = fx.final_statuses(Duration::from_secs(60));
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success")
    );
    // ...but neither the service nor its container shows it.
    let token = fx.forge.token().to_string();
    let spec = docker(&["service", "inspect", &name]);
    assert!(
        spec.contains("FORGE_SHA="),
        "inspect shows the environment:\n{spec}"
    );
    assert!(
        !spec.contains(&token),
        "token leaked into the service spec:\n{spec}"
    );
    let container = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.swarm.service.name={name}"),
    ]);
    assert!(!container.is_empty(), "the service's container exists");
    let inspect = docker(&["inspect", &container]);
    assert!(
        !inspect.contains(&token),
        "token leaked into the container config"
    );
}

#[test]
fn an_invalid_spec_posts_error_exits_2_and_creates_nothing() {
    let fx = Fixture::new(PASSING);
    let bad = format!(
        "image: {}\nexecute:\n  - echo ok\nexectue: []\n",
        fx.image.tag()
    );
    fx.publish(&bad);
    let out = run(&mut fx.swarm(10, &[]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".forge.yml:4:1"),
        "names the position:\n{stderr}"
    );
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(states(&statuses), ["forge/execute:error"]);
    assert!(fx.services(10).is_empty(), "nothing was created");
}

#[test]
fn a_request_over_the_operators_maximum_posts_error_exits_2_and_creates_nothing() {
    let fx = Fixture::new(PASSING);
    fx.publish(&format!(
        "image: {}\nresources: {{cpus: 1, memory: 4GiB}}\n{PASSING}",
        fx.image.tag()
    ));
    let out = run(&mut fx.swarm(40, &["--wait", "--max-memory", "1g", "--max-cpus", "2"]));
    let leftover = fx.services(40);
    let _guards = guard_all(&leftover);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "asks for memory: 4GiB, more than the 1GiB this launcher allows (--max-memory)"
        ),
        "{stderr}"
    );
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(states(&statuses), ["forge/execute:error"]);
    assert!(
        statuses[0]["description"]
            .as_str()
            .unwrap_or("")
            .contains("--max-memory"),
        "{statuses:?}"
    );
    assert!(leftover.is_empty(), "nothing was created: {leftover:?}");
}

#[test]
fn a_request_within_the_maxima_is_the_services_reservation_and_limit() {
    let fx = Fixture::new(PASSING);
    fx.publish(&format!(
        "image: {}\nresources: {{cpus: 0.5, memory: 64MiB, pids: 200}}\n{PASSING}",
        fx.image.tag()
    ));
    let constraint = "node.role==manager";
    let out = run(&mut fx.swarm(
        42,
        &[
            "--max-cpus",
            "2",
            "--max-memory",
            "1g",
            "--constraint",
            constraint,
        ],
    ));
    let services = fx.services(42);
    let _guards = guard_all(&services);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let spec: Value = serde_json::from_str(&docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate}}",
        &name,
    ]))
    .expect("the task template as JSON");
    let resources = &spec["Resources"];
    assert_eq!(resources["Reservations"]["NanoCPUs"], 500_000_000, "{spec}");
    assert_eq!(resources["Reservations"]["MemoryBytes"], 64 << 20, "{spec}");
    assert_eq!(resources["Limits"]["NanoCPUs"], 500_000_000, "{spec}");
    assert_eq!(resources["Limits"]["MemoryBytes"], 64 << 20, "{spec}");
    assert_eq!(resources["Limits"]["Pids"], 200, "{spec}");
    assert_eq!(spec["Placement"]["Constraints"][0], constraint, "{spec}");
    let statuses = fx.final_statuses(Duration::from_secs(60));
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success"),
        "{statuses:?}"
    );
}

#[test]
fn a_constraint_no_node_satisfies_keeps_the_task_queued_and_says_so() {
    let fx = Fixture::new(PASSING);
    let constraint = format!("node.labels.{}==ci", unique_name("forge-pool"));
    let out = run(&mut fx.swarm_started_within(
        &static_forgexec(),
        &fx.sha,
        41,
        "4s",
        &["--wait", "--constraint", &constraint],
    ));
    let leftover = fx.services(41);
    let _guards = guard_all(&leftover);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("was still queued after 4s: no node can take it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("constraints not satisfied"),
        "the swarm's reason: {stderr}"
    );
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:error"),
        "{statuses:?}"
    );
    assert!(
        statuses
            .last()
            .and_then(|s| s["description"].as_str())
            .unwrap_or("")
            .contains("queued"),
        "{statuses:?}"
    );
    assert!(
        leftover.is_empty(),
        "the queued service was removed: {leftover:?}"
    );
}

#[test]
fn a_missing_image_is_reported_with_dockers_error_and_cleaned_up() {
    let fx = Fixture::new(PASSING);
    let missing = format!("{}:404", unique_name("forge-no-such-image"));
    fx.publish(&format!("image: {missing}\n{PASSING}"));
    let out = run(&mut fx.swarm(11, &["--wait"]));
    let leftover = fx.services(11);
    let _guards = guard_all(&leftover);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("No such image: {missing}")),
        "{stderr}"
    );
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(states(&statuses), ["forge/execute:error"]);
    assert!(
        statuses[0]["description"]
            .as_str()
            .unwrap_or("")
            .contains("No such image"),
        "{statuses:?}"
    );
    assert!(
        leftover.is_empty(),
        "the failed service was removed: {leftover:?}"
    );
}

#[test]
fn a_new_launch_replaces_the_running_build_of_the_same_pull_request() {
    let fx = Fixture::new("execute:\n  - sleep 120\n");
    let first = run(&mut fx.swarm(12, &[]));
    let _first_guard = guard_all(&fx.services(12));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let first_name = String::from_utf8_lossy(&first.stdout).trim().to_string();
    // Wait until its build is really running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={first_name}"),
            "--filter",
            "status=running",
        ]);
        if !running.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the first build never started");
        std::thread::sleep(Duration::from_millis(100));
    }

    let new_sha = fx.push(PASSING);
    let second = run(&mut fx.swarm_at(&new_sha, 12, &["--wait"]));
    let _second_guard = guard_all(&fx.services(12));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let gone = Command::new("docker")
        .args(["service", "inspect", &first_name])
        .output()
        .expect("docker service inspect");
    assert!(
        !gone.status.success(),
        "the stale build {first_name} was removed"
    );
    // The swarm stops and removes its container shortly after.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let containers = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.swarm.service.name={first_name}"),
        ]);
        if containers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale build's container {containers} is still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fx.services(12).is_empty());
    let seen = states(&fx.forge.statuses(&new_sha));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("forge/execute:success"),
        "{seen:?}"
    );
}

#[test]
fn two_racing_launches_end_with_exactly_one_build() {
    let fx = Fixture::new("execute:\n  - sleep 120\n");
    for round in 0..3 {
        let pr = 20 + round;
        let a = fx
            .swarm(pr, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a");
        let b = fx
            .swarm(pr, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn b");
        let a = a.wait_with_output().expect("wait a");
        let b = b.wait_with_output().expect("wait b");
        let left = fx.services(pr);
        let _guards = guard_all(&left);
        assert_eq!(a.status.code(), Some(0), "{}", text(&a));
        assert_eq!(b.status.code(), Some(0), "{}", text(&b));
        assert_eq!(
            left.len(),
            1,
            "round {round}: {left:?}\n{}\n{}",
            text(&a),
            text(&b)
        );
        let printed: Vec<String> = [&a, &b]
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .collect();
        assert!(
            printed.contains(&left[0]),
            "the survivor was announced: {printed:?} vs {left:?}"
        );
    }
}

#[test]
fn an_event_payload_on_stdin_gives_the_facts() {
    let fx = Fixture::new(PASSING);
    let event = serde_json::json!({
        "action": "synchronize",
        "number": 13,
        "pull_request": {
            "number": 13,
            "commits": 1,
            "statuses_url": fx.status_url(),
            "head": {"sha": fx.sha, "repo": {"name": fx.repo, "owner": {"login": OWNER}}}
        },
        "installation": {"id": 4242}
    });
    let mut child = Command::new(launcher())
        .args([
            "swarm",
            "--event",
            "-",
            "--api-url",
            &fx.forge.url(),
            "--wait",
        ])
        .arg("--token-file")
        .arg(&fx.token_file)
        .arg("--forgexec")
        .arg(static_forgexec())
        .args(["--network", "host"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forge-launch");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(event.to_string().as_bytes())
            .expect("write event");
    }
    let out = child.wait_with_output().expect("wait");
    let _guards = guard_all(&fx.services(13));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = states(&fx.forge.statuses(&fx.sha));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("forge/execute:success"),
        "{seen:?}"
    );
}

#[test]
fn local_mode_produces_the_same_statuses_and_artifacts_as_swarm() {
    // The test stage outlasts the statuses' 1 s spacing, so both runs post
    // the same pending updates whatever the machine's speed.
    let fx = Fixture::new(&format!("{PASSING}setup:\n  - sleep 1.5\n"));
    let nginx = Nginx::start();
    let out = run(&mut fx.swarm(14, &["--wait", "--artifacts-url", &nginx.url()]));
    let _guards = guard_all(&fx.services(14));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let swarm_statuses = fx.forge.statuses(&fx.sha);
    let swarm_zip = fx
        .stored_artifacts(nginx.root(), "execute")
        .into_iter()
        .find(|p| p.ends_with("artifacts.zip"))
        .expect("swarm artifacts.zip");

    let artifacts_dir = fx.dir.path().join("local-artifacts");
    let repo = format!("{OWNER}/{}", fx.repo);
    let local = run(Command::new(launcher())
        .args(["local", "--repo", &repo, "--pr", "14", "--post-statuses"])
        .args(["--api-url", &fx.forge.url(), "--network", "host"])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--artifacts-dir")
        .arg(&artifacts_dir)
        .arg("--token-file")
        .arg(&fx.token_file)
        .arg("--forgexec")
        .arg(static_forgexec()));
    assert_eq!(local.status.code(), Some(0), "{}", text(&local));
    assert!(String::from_utf8_lossy(&local.stdout).contains("building hello"));

    let all = fx.forge.statuses(&fx.sha);
    let local_statuses = &all[swarm_statuses.len()..];
    assert_eq!(states(local_statuses), states(&swarm_statuses));
    let local_zip = artifacts_dir.join("artifacts.zip");
    assert!(
        artifacts_dir.join("build.log").is_file(),
        "build.log copied out"
    );
    assert_eq!(zip_names(&local_zip), zip_names(&swarm_zip));
    assert_eq!(
        read_zip_entry(&local_zip, "out.txt"),
        read_zip_entry(&swarm_zip, "out.txt")
    );
    let leftover = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=forge.repo={repo}"),
        "--filter",
        "label=forge.local=true",
    ]);
    assert!(leftover.is_empty(), "the local container was removed");
}

#[test]
fn local_mode_copies_the_working_tree_or_a_clean_head() {
    let fx = Fixture::new("execute:\n  - cat README\n");
    // an uncommitted change is built by default, not with --clean
    fx.git.write("README", "edited in the working tree\n");
    let repo = format!("{OWNER}/{}", fx.repo);
    let local = |extra: &[&str]| {
        run(Command::new(launcher())
            .args(["local", "--repo", &repo])
            .args(extra)
            .arg("--dir")
            .arg(fx.git.dir())
            .arg("--artifacts-dir")
            .arg(fx.dir.path().join("a"))
            .arg("--forgexec")
            .arg(static_forgexec()))
    };
    let dirty = local(&[]);
    assert_eq!(dirty.status.code(), Some(0), "{}", text(&dirty));
    assert!(
        String::from_utf8_lossy(&dirty.stdout).contains("edited in the working tree"),
        "{}",
        text(&dirty)
    );
    let clean = local(&["--clean"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains("a repository"),
        "{}",
        text(&clean)
    );
    assert!(
        fx.forge.all_statuses().is_empty(),
        "statuses are printed, not posted"
    );
}

#[test]
fn local_mode_refuses_a_request_over_the_maximum_before_creating_a_container() {
    let fx = Fixture::new(PASSING);
    fx.push(&format!("resources: {{pids: 5000}}\n{PASSING}"));
    let repo = format!("{OWNER}/{}", fx.repo);
    let out = run(Command::new(launcher())
        .args(["local", "--repo", &repo, "--max-pids", "1000"])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--artifacts-dir")
        .arg(fx.dir.path().join("a"))
        .arg("--forgexec")
        .arg(static_forgexec()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("asks for pids: 5000, more than the 1000 this launcher allows (--max-pids)"),
        "{}",
        text(&out)
    );
    let containers = docker(&["ps", "-aq", "--filter", &format!("label=forge.repo={repo}")]);
    assert!(containers.trim().is_empty(), "no container: {containers}");
}

#[test]
fn gc_removes_finished_builds_and_keeps_running_ones() {
    let fx = Fixture::new(PASSING);
    let finished = run(&mut fx.swarm(30, &[]));
    assert_eq!(finished.status.code(), Some(0), "{}", text(&finished));
    let finished_name = String::from_utf8_lossy(&finished.stdout).trim().to_string();
    let _g1 = Service::guard(finished_name.clone());
    fx.final_statuses(Duration::from_secs(60));

    let sleeping_sha = fx.push("execute:\n  - sleep 120\n");
    let running = run(&mut fx.swarm_at(&sleeping_sha, 31, &[]));
    assert_eq!(running.status.code(), Some(0), "{}", text(&running));
    let running_name = String::from_utf8_lossy(&running.stdout).trim().to_string();
    let _g2 = Service::guard(running_name.clone());
    // wait until the finished build's container has exited
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={finished_name}"),
        ]);
        if up.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the passing build never ended");
        std::thread::sleep(Duration::from_millis(100));
    }

    let repo = format!("{OWNER}/{}", fx.repo);
    let gc = run(Command::new(launcher()).args(["gc", "--older-than", "0s", "--repo", &repo]));
    assert_eq!(gc.status.code(), Some(0), "{}", text(&gc));
    let removed = String::from_utf8_lossy(&gc.stdout);
    assert!(removed.lines().any(|l| l == finished_name), "{}", text(&gc));
    assert!(!removed.lines().any(|l| l == running_name), "{}", text(&gc));
    assert!(fx.services(30).is_empty());
    assert_eq!(fx.services(31), [running_name]);

    // the age threshold protects young services
    let gc = run(Command::new(launcher()).args(["gc", "--older-than", "1h", "--repo", &repo]));
    assert_eq!(gc.status.code(), Some(0), "{}", text(&gc));
    assert_eq!(fx.services(31).len(), 1);
}

const AS_IMAGE_USER: &str = "\
execute:
  - test ! -e /forge/token && id -u
  - touch /forge/written-by-the-build && echo workspace $(pwd) $(stat -c %u .)
";

#[test]
fn an_image_with_a_non_root_user_builds_as_that_user_in_swarm_and_local_mode() {
    let fx = Fixture::with_image_changes(AS_IMAGE_USER, &["USER 1000:1000"]);
    let out = run(&mut fx.swarm(40, &["--wait"]));
    let _guards = guard_all(&fx.services(40));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.trim() == "1000"),
        "the build ran as uid 1000 and the token was deleted:\n{}",
        text(&out)
    );
    assert!(
        stdout.contains("workspace /forge/workspace 1000"),
        "{}",
        text(&out)
    );
    let seen = states(&fx.forge.statuses(&fx.sha));
    assert_eq!(
        seen.last().map(String::as_str),
        Some("forge/execute:success"),
        "{seen:?}"
    );

    let repo = format!("{OWNER}/{}", fx.repo);
    for extra in [&[][..], &["--clean"][..]] {
        let local = run(Command::new(launcher())
            .args(["local", "--repo", &repo])
            .args(extra)
            .arg("--dir")
            .arg(fx.git.dir())
            .arg("--artifacts-dir")
            .arg(fx.dir.path().join("a"))
            .arg("--token-file")
            .arg(&fx.token_file)
            .arg("--forgexec")
            .arg(static_forgexec()));
        assert_eq!(local.status.code(), Some(0), "{extra:?}: {}", text(&local));
        let stdout = String::from_utf8_lossy(&local.stdout);
        assert!(
            stdout.lines().any(|l| l.trim() == "1000"),
            "{extra:?}: {}",
            text(&local)
        );
        assert!(
            stdout.contains("workspace /forge/workspace 1000"),
            "{extra:?}: {}",
            text(&local)
        );
    }
}

#[test]
fn a_named_user_is_looked_up_in_the_images_own_passwd() {
    // busybox_rootfs's /etc/passwd has nobody as 65534:65534; the host's
    // passwd plays no part.
    let fx = Fixture::with_image_changes(
        "execute:\n  - test ! -e /forge/token && echo ids $(id -u):$(id -g)\n",
        &["USER nobody"],
    );
    let out = run(&mut fx.swarm(41, &["--wait"]));
    let _guards = guard_all(&fx.services(41));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ids 65534:65534"),
        "{}",
        text(&out)
    );
}
