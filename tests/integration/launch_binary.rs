//! Which forgexec `forge-launch` copies in, against the real daemon (this
//! x86_64 single-node swarm): a `--forgexec` directory of both binaries, one
//! without a binary for the node (an `error` status naming both, nothing
//! created), and the install layout found without any flag. Emulated
//! aarch64 builds are in `aarch64.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::aarch64::both_binaries;
use crate::common::{docker, static_forgexec, static_forgexec_aarch64, Service};
use crate::launch_swarm::{guard_all, launcher, run, states, text, Fixture, OWNER, PASSING};

#[test]
fn a_directory_of_both_binaries_builds_and_places_on_both_architectures() {
    let fx = Fixture::new(PASSING);
    let bins = both_binaries(fx.dir.path());
    let out = run(&mut fx.swarm_with(&bins, &fx.sha, 50, &[]));
    let services = fx.services(50);
    let _guards = guard_all(&services);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let placement = docker(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Placement.Platforms}}",
        &name,
    ]);
    let platforms: serde_json::Value = serde_json::from_str(&placement).expect("platforms JSON");
    assert_eq!(
        platforms,
        serde_json::json!([
            {"Architecture": "x86_64", "OS": "linux"},
            {"Architecture": "aarch64", "OS": "linux"}
        ]),
        "the swarm may place it where a binary exists"
    );
    let statuses = fx.final_statuses(Duration::from_secs(60));
    assert_eq!(
        states(&statuses).last().map(String::as_str),
        Some("forge/execute:success"),
        "the x86_64 node got the x86_64 binary"
    );
}

#[test]
fn no_binary_for_the_nodes_is_an_error_status_before_anything_is_created() {
    let fx = Fixture::new(PASSING);
    let only_arm = fx.dir.path().join("arm-only");
    std::fs::create_dir_all(&only_arm).unwrap();
    std::os::unix::fs::symlink(static_forgexec_aarch64(), only_arm.join("forgexec-aarch64"))
        .unwrap();
    let out = run(&mut fx.swarm_with(&only_arm, &fx.sha, 51, &["--wait"]));
    let leftover = fx.services(51);
    let _guards = guard_all(&leftover);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(leftover.is_empty(), "nothing was created: {leftover:?}");
    let statuses = fx.forge.statuses(&fx.sha);
    assert_eq!(states(&statuses), ["forge/execute:error"]);
    let description = statuses[0]["description"].as_str().unwrap_or("");
    assert!(
        description.contains("x86_64") && description.contains("aarch64"),
        "the status names the node's and the binary's architecture: {description}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "no ready swarm node can run this build: the ready nodes are x86_64 (1), the build needs aarch64 (have aarch64 in {})",
            only_arm.display()
        )),
        "{}",
        text(&out)
    );

    // A single file is used only where its architecture matches.
    let out = run(&mut fx.swarm_with(&static_forgexec_aarch64(), &fx.sha, 51, &[]));
    let _guards = guard_all(&fx.services(51));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(fx.services(51).is_empty());
}

/// `PREFIX/bin/forge-launch` (a link to the tested binary) and, when
/// `with_binaries`, `PREFIX/lib/forgexec/forgexec-{x86_64,aarch64}`.
fn install(prefix: &Path, with_binaries: bool) -> PathBuf {
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("forge-launch");
    // A hard link keeps its own path in /proc/self/exe (a symlink would
    // resolve to cargo's); copy when the two are on different filesystems.
    if std::fs::hard_link(launcher(), &exe).is_err() {
        std::fs::copy(launcher(), &exe).expect("copy forge-launch");
    }
    if with_binaries {
        let lib = prefix.join("lib/forgexec");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::copy(static_forgexec(), lib.join("forgexec-x86_64")).unwrap();
        std::fs::copy(static_forgexec_aarch64(), lib.join("forgexec-aarch64")).unwrap();
    }
    exe
}

#[test]
fn without_forgexec_the_install_layout_is_used_or_explained() {
    let fx = Fixture::new("execute:\n  - echo installed layout works\n");
    let repo = format!("{OWNER}/{}", fx.repo);
    let prefix = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let local = |exe: &Path| {
        run(Command::new(exe)
            .args(["local", "--repo", &repo])
            .arg("--dir")
            .arg(fx.git.dir())
            .arg("--artifacts-dir")
            .arg(fx.dir.path().join("a"))
            .env_remove("FORGE_LAUNCH_FORGEXEC"))
    };

    let bare = install(&prefix.path().join("bare"), false);
    let out = local(&bare);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = prefix.path().join("bare");
    assert!(
        stderr.contains(&format!(
            "looked for forgexec-x86_64 and forgexec-aarch64 in {} and {}",
            p.join("lib/forgexec").display(),
            p.join("bin").display()
        )),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("--forgexec") && stderr.contains("./musl-build --install PREFIX"),
        "{}",
        text(&out)
    );

    let installed = install(&prefix.path().join("usr"), true);
    let out = local(&installed);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("installed layout works"),
        "{}",
        text(&out)
    );
    // the swarm finds it the same way
    let out = run(Command::new(&installed)
        .args(["swarm", "--repo", &repo, "--pr", "52", "--sha", &fx.sha])
        .args([
            "--status-url",
            &fx.status_url(),
            "--api-url",
            &fx.forge.url(),
        ])
        .arg("--token-file")
        .arg(&fx.token_file)
        .args(["--network", "host", "--wait"])
        .env_remove("FORGE_LAUNCH_FORGEXEC"));
    let _guards: Vec<Service> = guard_all(&fx.services(52));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
