//! forgexec on aarch64, run here under emulation (qemu-user through
//! binfmt_misc, see `common::platform`): the static aarch64 build starts in
//! an empty root, runs a whole build in an arm64 busybox image through
//! `forge-launch local` (which picks the aarch64 binary for that image), and
//! passes the same token-file, signal and PID-1 cases as x86_64 (the same
//! test bodies, from `executor.rs`). Without the emulation these tests fail
//! and say what to install. Speed under emulation is not measured here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::platform::require_aarch64_emulation;
use crate::common::{
    docker, empty_rootfs_with, static_forgexec, static_forgexec_aarch64, unique_name, Nginx,
    Platform,
};
use crate::executor;
use crate::launch_swarm::{launcher, read_zip_entry, run, states, text, zip_names, Fixture, OWNER};

/// A `--forgexec` directory holding both binaries (links to the builds).
pub(crate) fn both_binaries(dir: &Path) -> PathBuf {
    let bins = dir.join("forgexec-bins");
    std::fs::create_dir_all(&bins).expect("create binaries dir");
    for (name, path) in [
        ("forgexec-x86_64", static_forgexec()),
        ("forgexec-aarch64", static_forgexec_aarch64()),
    ] {
        std::os::unix::fs::symlink(&path, bins.join(name)).expect("link binary");
    }
    bins
}

#[test]
fn the_aarch64_binary_is_static_and_starts_in_an_empty_root() {
    let platform = Platform::aarch64();
    let bytes = std::fs::read(&platform.forgexec).expect("read the aarch64 forgexec");
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "e_machine is EM_AARCH64"
    );
    let root = tempfile::tempdir().unwrap();
    let rootfs = root.path().join("rootfs");
    empty_rootfs_with(&rootfs, &[(&platform.forgexec, "/forgexec", 0o755)]);
    let image = platform.import(&unique_name("forgexec-arm64-empty"), &rootfs);
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Architecture}}",
            image.tag()
        ]),
        "arm64"
    );
    let name = unique_name("forgexec-arm64-version");
    let out = docker(&[
        "run",
        "--rm",
        "--name",
        &name,
        image.tag(),
        "/forgexec",
        "--version",
    ]);
    assert_eq!(out, format!("forgexec {}", env!("CARGO_PKG_VERSION")));
}

const ON_ARM: &str = "\
execute:
  - uname -m > arch.txt
  - echo building on $(cat arch.txt) > out.txt
  - cat out.txt
artifacts:
  paths: [out.txt]
";

#[test]
fn forge_launch_local_runs_a_whole_build_in_an_arm64_image() {
    let platform = Platform::aarch64();
    let fx = Fixture::on_platform(ON_ARM, &platform);
    let nginx = Nginx::start();
    let bins = both_binaries(fx.dir.path());
    let repo = format!("{OWNER}/{}", fx.repo);
    let out = run(Command::new(launcher())
        .args(["local", "--repo", &repo, "--pr", "5", "--post-statuses"])
        .args(["--api-url", &fx.forge.url(), "--network", "host"])
        .args(["--artifacts-url", &nginx.url()])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--token-file")
        .arg(&fx.token_file)
        .arg("--forgexec")
        .arg(&bins)
        .env("RUST_LOG", "forgexec::launch=info"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("building on aarch64"), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forgexec for aarch64"),
        "the launcher says which binary it chose:\n{}",
        text(&out)
    );

    let seen = states(&fx.forge.statuses(&fx.sha));
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
    assert_eq!(
        read_zip_entry(&files[0], "out.txt"),
        "building on aarch64\n"
    );
    let log = std::fs::read_to_string(&files[1]).expect("build.log");
    assert!(log.contains("building on aarch64"), "{log}");
}

#[test]
fn an_x86_64_binary_is_refused_for_an_arm64_image_naming_both() {
    let platform = Platform::aarch64();
    let fx = Fixture::on_platform(ON_ARM, &platform);
    let repo = format!("{OWNER}/{}", fx.repo);
    let out = run(Command::new(launcher())
        .args(["local", "--repo", &repo])
        .arg("--dir")
        .arg(fx.git.dir())
        .arg("--artifacts-dir")
        .arg(fx.dir.path().join("a"))
        .arg("--forgexec")
        .arg(static_forgexec()));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the local daemon is x86_64, image is arm64: no forgexec for aarch64 (have x86_64 from {})",
            static_forgexec().display()
        )),
        "{}",
        text(&out)
    );
    let leftover = docker(&["ps", "-aq", "--filter", &format!("label=forge.repo={repo}")]);
    assert!(leftover.is_empty(), "no container was created: {leftover}");
}

#[test]
fn the_token_file_is_deleted_and_secrets_masked_on_aarch64() {
    require_aarch64_emulation();
    executor::secrets_and_the_token_file_stay_hidden(static_forgexec_aarch64());
}

#[test]
fn sigterm_cancels_a_build_on_aarch64() {
    require_aarch64_emulation();
    executor::sigterm_cancels_and_reports(static_forgexec_aarch64());
}

#[test]
fn runs_as_pid_1_in_an_empty_aarch64_image() {
    executor::pid_1_in_an_empty_image(&Platform::aarch64());
}

#[test]
fn runs_as_pid_1_in_arm64_busybox_and_hides_its_memory() {
    executor::pid_1_shell_form_hides_its_memory(&Platform::aarch64());
}

#[test]
fn docker_stop_cancels_a_pid_1_build_on_aarch64() {
    executor::pid_1_docker_stop_cancels(&Platform::aarch64());
}
