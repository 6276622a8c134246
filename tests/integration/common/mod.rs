//! Shared support for the integration tests (`crate::common` in every
//! module of `tests/integration`). Everything here uses REAL parts: the static musl build of
//! forgexec, a GitHub-API-speaking HTTP server on 127.0.0.1, Debian's nginx
//! as a WebDAV artifact store, the Docker CLI against the local daemon and the
//! git CLI. When a real part is missing, the helper panics with a message that
//! says what is missing and how to install it: a test never silently skips.

pub mod debian;
pub mod docker;
pub mod forge_server;
pub mod git;
pub mod nginx;
pub mod pki;
pub mod platform;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use debian::{debian_image, debian_image_with, DebianRecipe};
pub use docker::{
    busybox_rootfs, docker, docker_ready, empty_rootfs_with, import_image, import_image_with,
    unique_name, Container, Image, Service,
};
pub use forge_server::{Fault, ForgeServer, RecordedRequest, Route};
pub use git::GitRepo;
pub use nginx::Nginx;
pub use platform::Platform;

/// The crate's root folder (where Cargo.toml and ./musl-build live).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Path of the static (x86_64 musl) forgexec binary.
///
/// Uses `FORGEXEC_STATIC_BIN` when set (it must name an existing file);
/// otherwise runs `./musl-build` once per test process and takes the path it
/// prints on its last line of stdout. Panics with the build's output when the
/// build fails.
pub fn static_forgexec() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| musl_build("FORGEXEC_STATIC_BIN", &[]))
        .clone()
}

/// Path of the static aarch64 forgexec: `FORGEXEC_STATIC_BIN_AARCH64`, or
/// `./musl-build --target aarch64` once per test process.
pub fn static_forgexec_aarch64() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| musl_build("FORGEXEC_STATIC_BIN_AARCH64", &["--target", "aarch64"]))
        .clone()
}

/// The file `$var` names, else the last line `./musl-build ARGS` prints.
fn musl_build(var: &str, args: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} does not name a file: unset it or run ./musl-build {}",
            path.display(),
            args.join(" ")
        );
        return path;
    }
    let script = manifest_dir().join("musl-build");
    assert!(
        script.is_file(),
        "{} is missing: the static build script is part of the repository",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "./musl-build {} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        args.join(" "),
        out.status
    );
    let path = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("./musl-build printed no path:\n{stderr}"));
    assert!(
        path.is_file(),
        "./musl-build printed {} but there is no such file",
        path.display()
    );
    path
}

/// Runs a command to completion and returns its stdout; panics with the
/// command line, exit status and both outputs when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The full path of `program` on PATH; panics with the install hint when
/// it is not there.
pub fn require_program(program: &str, hint: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} not installed: {hint}"))
}

/// SHA-256 of a file as coreutils' `sha256sum` computes it: an independent
/// check of the checksums forgexec sends.
pub fn sha256sum(path: &std::path::Path) -> String {
    require_program("sha256sum", "apt-get install coreutils");
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs `cmd` (stdin null, output captured) and returns its output, or
/// kills it and fails the test when it has not ended within `limit`: a
/// command that hangs is the bug being tested, not a reason to hang.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait after kill");
            panic!(
                "{cmd:?} still ran after {limit:?} (killed)\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait_with_output")
}
