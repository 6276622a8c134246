//! Local builds end to end with real git repositories made here: `forgexec
//! run` (facts from git, `--list`, `--stage`, `--clean`, statuses printed or
//! posted to a GitHub-like server on 127.0.0.1) and the pre-push hook on real
//! `git push`es to a bare repository. Uses the host build of forgexec; no
//! Docker.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const FORGEXEC: &str = env!("CARGO_BIN_EXE_forgexec");

/// `required.txt` must be committed for the build to pass; the test stage
/// prints a marker when it passes and `cat`s the file (its error is the
/// failing command's output).
const SPEC: &str = "\
environment:
  GREETING: hello
setup:
  - echo setup-marker-output
execute:
  - echo passing-command-marker
  - cat required.txt
  - run: sh -c 'pwd >> \"$BUILD_RECORD\"'
";

/// A developer's clone with an origin and a bare repository to push to,
/// and a private temp folder for forgexec's temporary trees.
struct Project {
    _root: tempfile::TempDir,
    repo: GitRepo,
    remote: PathBuf,
    tmp: PathBuf,
    record: PathBuf,
}

impl Project {
    fn new() -> Project {
        require_program("git", "apt-get install git");
        let root = tempfile::tempdir().unwrap();
        let remote = root.path().join("remote.git");
        run_ok(
            Command::new("git")
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(&remote),
        );
        let repo = GitRepo::init(&root.path().join("work"));
        // Facts come from the fetch URL; pushes go to the bare repository.
        repo.git(&[
            "remote",
            "add",
            "origin",
            "https://github.com/octo/hello.git",
        ]);
        repo.git(&[
            "config",
            "remote.origin.pushurl",
            &remote.display().to_string(),
        ]);
        let tmp = root.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let record = root.path().join("builds.txt");
        Project {
            repo,
            remote,
            tmp,
            record,
            _root: root,
        }
    }

    fn dir(&self) -> &Path {
        self.repo.dir()
    }

    /// A commit that passes: the spec and `required.txt`.
    fn commit_good(&self, message: &str) -> String {
        self.repo
            .commit_files(&[(".forge.yml", SPEC), ("required.txt", message)], message)
    }

    /// A commit without `required.txt`: its build fails.
    fn commit_broken(&self, message: &str) -> String {
        self.repo.write(".forge.yml", SPEC);
        let _ = std::fs::remove_file(self.dir().join("required.txt"));
        self.repo.commit(message)
    }

    fn forgexec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FORGEXEC);
        cmd.args(args)
            .current_dir(self.dir())
            .env("TMPDIR", &self.tmp)
            .env("BUILD_RECORD", &self.record)
            .env_remove("FORGE_OWNER")
            .env_remove("FORGE_REPO")
            .env_remove("FORGE_SHA")
            .env_remove("FORGE_ACTION")
            .env_remove("FORGE_ARTIFACTS_URL")
            .env_remove("FORGE_STATUS_URL")
            .env_remove("FORGE_TOKEN")
            .env_remove("FORGE_TOKEN_FILE")
            .env_remove("FORGE_SKIP_HOOK")
            .stdin(Stdio::null());
        cmd
    }

    fn install_hook(&self) {
        let out = self.forgexec(&["hook", "install"]).output().unwrap();
        assert!(out.status.success(), "install failed: {}", text(&out));
    }

    /// `git push ARGS` with the hook's environment; returns the output.
    fn push(&self, args: &[&str]) -> Output {
        self.push_with(args, &[])
    }

    fn push_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("git");
        cmd.arg("push")
            .args(args)
            .current_dir(self.dir())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("TMPDIR", &self.tmp)
            .env("BUILD_RECORD", &self.record)
            .env_remove("FORGE_SKIP_HOOK")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd.output().expect("git push runs")
    }

    /// The commit the bare remote has for `branch`, if any.
    fn remote_head(&self, branch: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.remote)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Folders the builds ran in, one line per build of the test stage.
    fn builds(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Asserts forgexec left nothing in its temp folder.
    fn assert_no_temporary_trees(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "temporary trees left behind: {left:?}");
        for dir in self.builds() {
            assert!(
                !Path::new(&dir).exists(),
                "the build folder {dir} still exists"
            );
        }
    }

    /// Every file of the work tree (outside `.git`) with its bytes and mode,
    /// and git's view of it.
    fn snapshot(&self) -> Snapshot {
        let mut files = BTreeMap::new();
        for entry in walk(self.dir()) {
            let meta = std::fs::symlink_metadata(&entry).unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(&entry).unwrap()
            } else {
                Vec::new()
            };
            files.insert(
                entry.strip_prefix(self.dir()).unwrap().to_path_buf(),
                (bytes, meta.permissions().mode()),
            );
        }
        let status = self.repo.git(&[
            "status",
            "--porcelain=v1",
            "--ignored",
            "--untracked-files=all",
        ]);
        let stashes = self.repo.git(&["stash", "list"]);
        (files, status, stashes)
    }
}

/// Files (bytes, mode), `git status`, `git stash list`.
type Snapshot = (BTreeMap<PathBuf, (Vec<u8>, u32)>, String, String);

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        out.push(path.clone());
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
    }
    out
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

#[test]
fn a_broken_commit_is_refused_while_the_dirty_tree_would_pass() {
    let p = Project::new();
    p.install_hook();
    let broken = p.commit_broken("forgot required.txt");
    // The work tree has the file, uncommitted: a build of it passes.
    p.repo.write("required.txt", "only on my disk\n");
    let before = p.snapshot();
    let dirty = p.forgexec(&["run"]).output().unwrap();
    assert_eq!(dirty.status.code(), Some(0), "{}", text(&dirty));
    std::fs::remove_dir_all(p.dir().join("forge-artifacts")).unwrap();
    std::fs::remove_file(&p.record).unwrap();
    assert_eq!(p.snapshot(), before);

    let out = p.push(&["origin", "main"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the push went through:\n{}",
        text(&out)
    );
    assert_eq!(p.remote_head("main"), None, "the remote got the commit");
    // Which commit, which command, and the command's full output.
    assert!(
        err.contains(&format!(
            "forgexec pre-push: {} setup ... ok",
            short(&broken)
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "forgexec pre-push: {} test ... FAILED",
            short(&broken)
        )),
        "{err}"
    );
    assert!(err.contains("==> [test 2/3] cat required.txt"), "{err}");
    assert!(
        err.contains("required.txt: No such file or directory"),
        "{err}"
    );
    assert!(
        err.contains(&format!("push refused: commit {broken} (refs/heads/main) failed: test: `cat required.txt` exited 1")),
        "{err}"
    );
    assert!(err.contains("--no-verify"), "{err}");
    // Passing commands' output is held back.
    assert!(!err.contains("passing-command-marker"), "{err}");
    assert!(!err.contains("setup-marker-output"), "{err}");
    assert_eq!(p.snapshot(), before, "the work tree changed");
    p.assert_no_temporary_trees();

    // Skipping lets it through, either way.
    let skipped = p.push_with(&["origin", "main"], &[("FORGE_SKIP_HOOK", "1")]);
    assert!(skipped.status.success(), "{}", text(&skipped));
    assert!(stderr(&skipped).contains("skipped (FORGE_SKIP_HOOK=1)"));
    assert_eq!(p.remote_head("main"), Some(broken));
    let next = p.commit_broken("still broken");
    let no_verify = p.push(&["--no-verify", "origin", "main"]);
    assert!(no_verify.status.success(), "{}", text(&no_verify));
    assert!(!stderr(&no_verify).contains("forgexec"));
    assert_eq!(p.remote_head("main"), Some(next));
}

#[test]
fn a_good_commit_goes_through_while_the_work_tree_is_broken() {
    let p = Project::new();
    p.install_hook();
    let good = p.commit_good("good");
    // Break the work tree every way: deleted, modified, untracked, ignored.
    std::fs::remove_file(p.dir().join("required.txt")).unwrap();
    p.repo.write(".forge.yml", "execute:\n  - exit 9\n");
    p.repo.write(".gitignore", "junk/\n");
    p.repo.write("junk/big.bin", vec![0u8; 4096]);
    p.repo.write("untracked.txt", "x");
    let before = p.snapshot();
    let dirty = p.forgexec(&["run"]).output().unwrap();
    assert_eq!(dirty.status.code(), Some(1), "{}", text(&dirty));
    let _ = std::fs::remove_dir_all(p.dir().join("forge-artifacts"));
    assert_eq!(p.snapshot(), before);

    let out = p.push(&["origin", "main"]);
    assert!(
        out.status.success(),
        "the push was refused:\n{}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("forgexec pre-push: {} test ... ok", short(&good))),
        "{err}"
    );
    assert_eq!(p.remote_head("main"), Some(good));
    assert_eq!(p.snapshot(), before, "the work tree changed");
    let builds = p.builds();
    assert_eq!(builds.len(), 1, "{builds:?}");
    assert!(
        !Path::new(&builds[0]).starts_with(p.dir()),
        "built in the work tree: {builds:?}"
    );
    p.assert_no_temporary_trees();
}

#[test]
fn new_branches_several_refs_and_deletions() {
    let p = Project::new();
    p.install_hook();
    let first = p.commit_good("first");
    // A new branch (the remote sha is all zeros), pushed under two names:
    // one commit, built once.
    let out = p.push(&["origin", "main", "main:refs/heads/copy"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("building in a clean checkout").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "forgexec pre-push: {} (refs/heads/main, refs/heads/copy on origin)",
            short(&first)
        )),
        "{err}"
    );
    assert_eq!(p.builds().len(), 1);
    assert_eq!(p.remote_head("copy"), Some(first.clone()));

    // Two refs with different commits: each is built.
    p.repo.git(&["checkout", "-q", "-b", "topic"]);
    let topic = p.commit_good("topic work");
    p.repo.git(&["checkout", "-q", "main"]);
    let second = p.commit_good("second");
    let out = p.push(&["origin", "topic", "main"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    for sha in [&topic, &second] {
        assert!(
            err.contains(&format!("{} test ... ok", short(sha))),
            "{err}"
        );
    }
    assert_eq!(p.builds().len(), 3);
    assert_eq!(p.remote_head("topic"), Some(topic.clone()));

    // A broken commit among several refuses the whole push and is named.
    p.repo.git(&["checkout", "-q", "topic"]);
    let topic2 = p.commit_good("more topic work");
    p.repo.git(&["checkout", "-q", "main"]);
    let broken = p.commit_broken("main broken");
    let out = p.push(&["origin", "topic", "main"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("push refused: commit {broken} (refs/heads/main)")),
        "{err}"
    );
    assert_ne!(p.remote_head("topic"), Some(topic2));
    assert_eq!(p.remote_head("main"), Some(second.clone()));

    // A deletion builds nothing.
    let before = p.builds().len();
    let out = p.push(&["origin", ":copy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stderr(&out).contains("building"), "{}", text(&out));
    assert_eq!(p.builds().len(), before);
    assert_eq!(p.remote_head("copy"), None);
    p.assert_no_temporary_trees();
}

#[test]
fn the_hook_goes_where_core_hooks_path_says_and_serves_worktrees() {
    let p = Project::new();
    p.repo.git(&["config", "core.hooksPath", "githooks"]);
    p.install_hook();
    let hook = p.dir().join("githooks/pre-push");
    assert!(hook.is_file(), "no hook at {}", hook.display());
    assert!(!p.dir().join(".git/hooks/pre-push").exists());
    let script = std::fs::read_to_string(&hook).unwrap();
    let exe = Path::new(FORGEXEC).canonicalize().unwrap();
    assert!(
        script.contains(&format!("FORGEXEC='{}'", exe.display())),
        "the hook must point at the forgexec that installed it:\n{script}"
    );
    p.commit_broken("broken");
    let out = p.push(&["origin", "main"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("push refused"), "{}", text(&out));

    // From a linked worktree the hook lands in the shared hooks folder.
    // The remote is a plain path here: it names no owner, and the hook
    // still builds (as `local/<folder>`).
    let q = Project::new();
    q.repo.git(&["config", "--unset", "remote.origin.pushurl"]);
    q.repo.git(&[
        "remote",
        "set-url",
        "origin",
        &q.remote.display().to_string(),
    ]);
    let good = q.commit_good("good");
    let linked = q.dir().parent().unwrap().join("linked");
    q.repo.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "side",
        &linked.display().to_string(),
    ]);
    let out = Command::new(FORGEXEC)
        .args(["hook", "install", "--dir"])
        .arg(&linked)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(q.dir().join(".git/hooks/pre-push").is_file());
    let out = Command::new("git")
        .args(["push", "origin", "side"])
        .current_dir(&linked)
        .env("TMPDIR", &q.tmp)
        .env("BUILD_RECORD", &q.record)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains(&format!("{} test ... ok", short(&good))));
    q.assert_no_temporary_trees();
}

#[test]
fn an_existing_hook_is_chained_kept_and_restored() {
    let p = Project::new();
    let hooks = p.dir().join(".git/hooks");
    let seen = p.dir().parent().unwrap().join("existing-hook-saw.txt");
    let existing = format!(
        "#!/bin/sh\necho \"existing hook $1\" >> '{0}'\ncat >> '{0}'\n[ ! -e \"$BLOCK\" ]\n",
        seen.display()
    );
    std::fs::write(hooks.join("pre-push"), &existing).unwrap();
    std::fs::set_permissions(
        hooks.join("pre-push"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = p.forgexec(&["hook", "install"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("runs first"),
        "{}",
        text(&out)
    );
    let chained = hooks.join("pre-push.forgexec-chained");
    assert_eq!(std::fs::read_to_string(&chained).unwrap(), existing);

    // Both run, the existing one first, with the same refs on stdin.
    let sha = p.commit_good("good");
    let out = p.push(&["origin", "main"]);
    assert!(out.status.success(), "{}", text(&out));
    let saw = std::fs::read_to_string(&seen).unwrap();
    assert!(saw.starts_with("existing hook origin\n"), "{saw}");
    assert!(
        saw.contains(&format!("refs/heads/main {sha} refs/heads/main")),
        "{saw}"
    );
    assert_eq!(p.builds().len(), 1);

    // The existing hook can still refuse a push.
    let block = p.dir().parent().unwrap().join("block");
    std::fs::write(&block, "").unwrap();
    p.commit_good("second");
    let out = p.push_with(&["origin", "main"], &[("BLOCK", block.to_str().unwrap())]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        p.builds().len(),
        1,
        "forgexec ran after the chained hook failed"
    );

    // Installing again updates forgexec's hook and keeps the chained one.
    let out = p.forgexec(&["hook", "install"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("updated"));
    assert_eq!(std::fs::read_to_string(&chained).unwrap(), existing);

    // Uninstall puts the original back.
    let out = p.forgexec(&["hook", "uninstall"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
        existing
    );
    assert!(!chained.exists());
    // A hook forgexec did not write is never removed.
    let out = p.forgexec(&["hook", "uninstall"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("not installed by forgexec"));
    assert!(hooks.join("pre-push").exists());
}

#[test]
fn a_hook_that_cannot_be_chained_is_refused_unless_forced() {
    let p = Project::new();
    let hooks = p.dir().join(".git/hooks");
    std::fs::write(hooks.join("pre-push"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(
        hooks.join("pre-push.forgexec-chained"),
        "#!/bin/sh\nexit 0\n",
    )
    .unwrap();
    let out = p.forgexec(&["hook", "install"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("already installed"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );

    let out = p
        .forgexec(&["hook", "install", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-push.forgexec-backup")).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    assert!(std::fs::read_to_string(hooks.join("pre-push"))
        .unwrap()
        .contains("# forgexec pre-push hook"));
}

#[test]
fn run_clean_ignores_an_uncommitted_change() {
    let p = Project::new();
    p.commit_broken("broken");
    p.repo.write("required.txt", "uncommitted\n");
    let before = p.snapshot();

    let out = p.forgexec(&["run", "--stage", "test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_file(&p.record).unwrap();
    let out = p.forgexec(&["run", "--clean"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    // Same log format as CI, streamed on stdout.
    assert!(all.contains("==> [test 2/3] cat required.txt"), "{all}");
    assert!(all.contains("<== [test 2/3] FAILED: exited 1"), "{all}");
    assert!(
        all.contains("status failure [forge/execute]: test: `cat required.txt` exited 1"),
        "{all}"
    );
    assert!(all.contains("statuses are printed, not posted"), "{all}");
    let _ = std::fs::remove_dir_all(p.dir().join("forge-artifacts"));
    assert_eq!(p.snapshot(), before);
    p.assert_no_temporary_trees();
}

#[test]
fn ctrl_c_removes_the_temporary_checkout() {
    let p = Project::new();
    let started = p.dir().parent().unwrap().join("started");
    p.repo.commit_files(
        &[(
            ".forge.yml",
            &format!(
                "execute:\n  - sh -c 'pwd > {}; sleep 60'\n",
                started.display()
            ),
        )],
        "slow",
    );
    let mut child = p
        .forgexec(&["run", "--clean"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() || std::fs::read_to_string(&started).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the build never started");
        assert!(child.try_wait().unwrap().is_none(), "forgexec ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tree = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .to_string();
    assert!(Path::new(&tree).is_dir());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "exit 128+SIGINT expected: {}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("status error [forge/execute]: cancelled by SIGINT during test"),
        "{}",
        text(&out)
    );
    assert!(!Path::new(&tree).exists(), "{tree} survived Ctrl-C");
    p.assert_no_temporary_trees();
}

#[test]
fn owner_and_repo_come_from_origin_in_each_form_and_flags_win() {
    let p = Project::new();
    let sha = p.commit_good("good");
    for url in [
        "https://github.com/octo-org/hello-world.git",
        "ssh://git@github.com/octo-org/hello-world.git",
        "git@github.com:octo-org/hello-world.git",
    ] {
        p.repo.git(&["remote", "set-url", "origin", url]);
        let out = p.forgexec(&["run", "--list"]).output().unwrap();
        assert!(out.status.success(), "{url}: {}", text(&out));
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            listed.starts_with(&format!("octo-org/hello-world at {sha} (action execute)")),
            "{url}: {listed}"
        );
    }
    let parent = p.commit_good("second");
    let out = p
        .forgexec(&["run", "--list", "--owner", "me", "--sha", "HEAD~1"])
        .env("FORGE_REPO", "other")
        .env("FORGE_OWNER", "not-me")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.starts_with(&format!("me/other at {sha}")),
        "{listed}"
    );
    assert_ne!(sha, parent);

    // No origin and no flags: built as local/<folder>, and said so.
    p.repo.git(&["remote", "remove", "origin"]);
    let out = p.forgexec(&["run", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let folder = p.dir().canonicalize().unwrap();
    let folder = folder.file_name().unwrap().to_string_lossy();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.starts_with(&format!("local/{folder} at {parent}")),
        "{listed}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "there is no `origin` remote: building as local/{folder}"
        )),
        "{err}"
    );
    assert!(err.contains("pass --owner"), "{err}");
}

#[test]
fn list_prints_stages_commands_and_environment_without_running() {
    let p = Project::new();
    p.repo.git(&[
        "remote",
        "set-url",
        "origin",
        "https://github.com/octo/hello.git",
    ]);
    let sha = p.repo.commit_files(
        &[(
            ".forge.yml",
            "environment:\n  GREETING: hello world\n  API_KEY: s3cr3t-value-123\n\
             secrets: [API_KEY]\n\
             setup:\n  - touch setup-ran\n\
             execute:\n  - touch test-ran\n\
             actions:\n  lint:\n    - run: [\"cargo\", \"clippy\"]\n      timeout: 5m\n      workdir: sub\n      env: {TOKEN_ECHO: s3cr3t-value-123}\n\
             artifacts:\n  paths: [\"out/**\"]\n",
        )],
        "spec",
    );
    // A controlled environment: what is inherited is listed too, the
    // credential never, and the values of `secrets:` masked.
    let path = std::env::var("PATH").unwrap();
    let out = p
        .forgexec(&["run", "--list"])
        .env_clear()
        .env("PATH", &path)
        .env("HOME", p.dir())
        .env("TMPDIR", &p.tmp)
        .env("FORGE_BUILD_ID", "b7")
        .env("FORGE_TOKEN", "ghp_NeverListed0123456789")
        .env("INHERITED", "from the shell")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listed.contains("ghp_NeverListed"), "{listed}");
    let dir = p.dir().canonicalize().unwrap();
    let quoted = |v: &str| forgexec::build::plan::shell_quote(v);
    let expected = format!(
        "octo/hello at {sha} (action execute), workspace {dir}\n\
         environment (inherited, then .forge.yml's, then the build facts; never FORGE_TOKEN and FORGE_TOKEN_FILE):\n\
         \x20 API_KEY=***\n\
         \x20 CI=true\n\
         \x20 FORGE_ACTION=execute\n\
         \x20 FORGE_BUILD_ID=b7\n\
         \x20 FORGE_OWNER=octo\n\
         \x20 FORGE_REPO=hello\n\
         \x20 FORGE_SHA={sha}\n\
         \x20 FORGE_WORKSPACE={dir}\n\
         \x20 GREETING='hello world'\n\
         \x20 HOME={home}\n\
         \x20 INHERITED='from the shell'\n\
         \x20 PATH={path}\n\
         \x20 TMPDIR={tmp}\n\
         stage setup: 1 command\n\
         \x20 1. touch setup-ran\n\
         \x20    argv: /bin/sh -ec 'touch setup-ran'\n\
         stage test: 1 command\n\
         \x20 1. touch test-ran\n\
         \x20    argv: /bin/sh -ec 'touch test-ran'\n\
         stage artifacts: out/** (excluding forge-artifacts/**) when Always, to file://{dir}/forge-artifacts\n",
        dir = dir.display(),
        home = quoted(&p.dir().display().to_string()),
        path = quoted(&path),
        tmp = quoted(&p.tmp.display().to_string()),
    );
    assert_eq!(listed, expected);
    assert!(!p.dir().join("setup-ran").exists() && !p.dir().join("test-ran").exists());

    let out = p
        .forgexec(&["run", "--list", "--action", "lint", "--stage", "test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listed.contains("stage setup"), "{listed}");
    assert!(!listed.contains("stage artifacts"), "{listed}");
    assert!(listed.contains(
        "stage test: 1 command\n  1. cargo clippy\n     argv: cargo clippy\n     workdir: sub\n     timeout: 5m0s\n     env: TOKEN_ECHO=***\n"
    ), "{listed}");
    assert!(!listed.contains("s3cr3t"), "{listed}");
}

#[test]
fn warnings_are_plain_text_off_a_terminal() {
    let p = Project::new();
    p.repo.commit_files(
        &[(
            ".forge.yml",
            "secrets: [NOT_SET_ANYWHERE]\nexecute:\n  - \"true\"\n",
        )],
        "spec",
    );
    let out = p
        .forgexec(&["run", "--list"])
        .env_remove("NOT_SET_ANYWHERE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("NOT_SET_ANYWHERE"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
}

#[test]
fn stages_statuses_and_artifacts_locally() {
    const TOKEN: &str = "ghp_LocalToken0123456789";
    let p = Project::new();
    p.repo.git(&[
        "remote",
        "set-url",
        "origin",
        "git@github.com:octo/hello.git",
    ]);
    let sha = p.repo.commit_files(
        &[(
            ".forge.yml",
            "setup:\n  - echo in-setup\nexecute:\n  - echo in-test\n  - mkdir -p out && echo data > out/result.txt\n\
             artifacts:\n  paths: [\"out/**\"]\n",
        )],
        "spec",
    );
    // --stage setup runs setup alone.
    let out = p.forgexec(&["run", "--stage", "setup"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("in-setup") && !stdout.contains("in-test"),
        "{stdout}"
    );

    // Statuses are posted only with --post-statuses and a token.
    let server = ForgeServer::start(TOKEN);
    let out = p
        .forgexec(&["run", "--post-statuses"])
        .env("FORGE_API_URL", server.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("FORGE_TOKEN: --post-statuses needs a token"));

    let out = p
        .forgexec(&["run", "--clean"])
        .env("FORGE_API_URL", server.url())
        .env("FORGE_TOKEN", TOKEN)
        .env("FORGE_BUILD_ID", "b1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        server.all_statuses().is_empty(),
        "posted without --post-statuses"
    );
    assert!(stderr(&out).contains("status success [forge/execute]"));
    let zip = p.dir().join(format!(
        "forge-artifacts/octo/hello/{sha}/execute/b1/artifacts.zip"
    ));
    assert!(zip.is_file(), "no {}", zip.display());
    let log = std::fs::read_to_string(zip.with_file_name("build.log")).unwrap();
    assert!(
        log.contains("==> [test 1/2] echo in-test\nin-test\n"),
        "{log}"
    );
    p.assert_no_temporary_trees();

    let out = p
        .forgexec(&["run", "--post-statuses", "--stage", "test"])
        .env("FORGE_API_URL", server.url())
        .env("FORGE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let statuses = server.statuses(&sha);
    let last = statuses.last().expect("statuses were posted");
    assert_eq!(last["state"], "success", "{statuses:?}");
    assert_eq!(last["context"], "forge/execute");
    assert!(!text(&out).contains(TOKEN));
}
