//! Proves the docker and git helpers of tests/common against the real
//! daemon: a busybox image built from Debian's busybox-static runs a shell,
//! and the guards clean up after themselves.

use crate::common;

use std::process::Command;

use crate::common::{Container, GitRepo};

fn exists(kind: &str, name: &str) -> bool {
    Command::new("docker")
        .args([kind, "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn busybox_image_runs_a_shell_and_guards_clean_up() {
    common::docker_ready();
    let root = tempfile::tempdir().unwrap();
    common::busybox_rootfs(root.path());
    assert!(root.path().join("bin/sh").exists());
    let tag = common::unique_name("forgexec-busybox");
    let image = common::import_image(&tag, root.path());
    let name = common::unique_name("forgexec-bb");
    let out = {
        let c = Container::run_detached(&[
            "--name",
            &name,
            "--network",
            "none",
            image.tag(),
            "/bin/sh",
            "-c",
            "echo hello from $(whoami); test -d /tmp && echo tmp-ok; exit 7",
        ]);
        assert_eq!(c.wait(), 7);
        let (stdout, _) = c.logs();
        assert!(exists("container", &name));
        stdout
    };
    assert_eq!(out, "hello from root\ntmp-ok\n");
    assert!(!exists("container", &name), "Container guard removes it");
    drop(image);
    assert!(!exists("image", &tag), "Image guard removes it");
}

#[test]
fn git_repo_helper_commits_files() {
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::init(dir.path());
    let first = repo.commit_files(&[(".forge.yml", "test: true\n"), ("src/a.txt", "a")], "one");
    assert_eq!(first.len(), 40);
    repo.write("src/a.txt", "b");
    let second = repo.commit("two");
    assert_ne!(first, second);
    assert_eq!(repo.git(&["show", "HEAD:src/a.txt"]), "b");
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]), "2");
}
