//! Docker helpers for tests, all through the docker CLI: readiness check,
//! images made with `docker import` from a rootfs folder the test builds
//! (empty but for chosen files, or busybox-static), and guards that remove
//! containers, services and images on Drop.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics with the reason when the Docker daemon is not usable.
pub fn docker_ready() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .unwrap_or_else(|e| {
            panic!("docker CLI not runnable ({e}): run tests/run or .ci/run (installs docker.io and starts dockerd)")
        });
    assert!(
        out.status.success(),
        "docker daemon not reachable (`docker info` failed: {}): start dockerd, e.g. with tests/run",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `docker ARGS`, panics with its output on failure, returns stdout
/// (trimmed).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name unique to this test process and call: `{prefix}-{pid}-{n}-{rand}`
/// (lowercase, valid for images, containers and services).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        fastrand::u16(..)
    )
}

/// An imported image; removed (`docker rmi -f`) on Drop unless it is
/// [`Image::kept`].
pub struct Image {
    tag: String,
    keep: bool,
}

impl Image {
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// An image the test uses but does not own (a cached Debian image the
    /// next run reuses): left in place on Drop.
    pub fn kept(tag: &str) -> Image {
        Image {
            tag: tag.to_string(),
            keep: true,
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Tars `rootfs` (numeric owners, paths relative to it) and pipes it into
/// `docker import - TAG`. The returned guard removes the image on Drop.
pub fn import_image(tag: &str, rootfs: &Path) -> Image {
    import_image_with(tag, rootfs, &[])
}

/// [`import_image`] with Dockerfile instructions applied on import
/// (`docker import --change`, e.g. `USER 1000:1000`).
pub fn import_image_with(tag: &str, rootfs: &Path, changes: &[&str]) -> Image {
    docker_ready();
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tar (apt-get install tar): {e}"));
    let tar_out = tar.stdout.take().expect("tar stdout is piped");
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.args(["--change", change]);
    }
    let import = import
        .args(["-", tag])
        .stdin(Stdio::from(tar_out))
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker import: {e}"));
    let tar_status = tar.wait_with_output().expect("wait for tar");
    assert!(
        tar_status.status.success(),
        "tar of {} failed: {}",
        rootfs.display(),
        String::from_utf8_lossy(&tar_status.stderr)
    );
    assert!(
        import.status.success(),
        "docker import - {tag} failed: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    Image {
        tag: tag.to_string(),
        keep: false,
    }
}

/// An image of `rootfs` whose config says `architecture` (Go's name:
/// `arm64`, `amd64`), as an image pulled for that platform would. `docker
/// import --platform` needs an experimental daemon (20.10), so this builds
/// the `docker save` layout by hand (one layer, its config, the manifest)
/// and `docker load`s it. A tag without `:` gets `:latest`.
pub fn import_image_for(tag: &str, rootfs: &Path, architecture: &str) -> Image {
    docker_ready();
    let tag = if tag.rsplit('/').next().unwrap_or(tag).contains(':') {
        tag.to_string()
    } else {
        format!("{tag}:latest")
    };
    let work = tempfile::tempdir().expect("tempdir");
    let layer = work.path().join("layer.tar");
    let tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("cannot run tar (apt-get install tar): {e}"));
    assert!(
        tar.status.success(),
        "tar of {} failed: {}",
        rootfs.display(),
        String::from_utf8_lossy(&tar.stderr)
    );
    let diff_id = format!("sha256:{}", super::sha256sum(&layer));
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [tag],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(work.path().join("config.json"), config.to_string()).expect("write config");
    std::fs::write(work.path().join("manifest.json"), manifest.to_string())
        .expect("write manifest");
    let archive = work.path().join("image.tar");
    let pack = Command::new("tar")
        .arg("-C")
        .arg(work.path())
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "layer.tar"])
        .output()
        .expect("run tar");
    assert!(pack.status.success(), "tar of the image failed");
    docker(&["load", "-q", "-i", &archive.display().to_string()]);
    Image { tag, keep: false }
}

fn copy_with_mode(src: &Path, dest: &Path, mode: u32) {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::copy(src, dest)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dest.display()));
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dest.display()));
}

/// Fills `dir` with ONLY the given files: `(source, path inside the root
/// such as "/forgexec", mode)`. No shell, libc, certificates or /tmp.
pub fn empty_rootfs_with(dir: &Path, files: &[(&Path, &str, u32)]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    for (src, dest, mode) in files {
        copy_with_mode(src, &dir.join(dest.trim_start_matches('/')), *mode);
    }
}

/// Fills `dir` with a busybox root: Debian's static /bin/busybox at
/// /bin/busybox, a symlink per applet in /bin, /tmp (1777), /root and a
/// minimal /etc/passwd and /etc/group.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "busybox not installed: run .ci/run or apt-get install busybox-static"
    );
    busybox_rootfs_from(dir, busybox);
}

/// [`busybox_rootfs`] with another static busybox (one for another CPU,
/// whose `--list` then runs under emulation).
pub fn busybox_rootfs_from(dir: &Path, busybox: &Path) {
    let bin = dir.join("bin");
    copy_with_mode(busybox, &bin.join("busybox"), 0o755);
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("run busybox --list: {e}"));
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if !link.exists() {
            symlink("busybox", &link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        }
    }
    for (sub, mode) in [("tmp", 0o1777), ("root", 0o700), ("etc", 0o755)] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write etc/passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .expect("write etc/group");
}

/// A container removed (`docker rm -f`) on Drop.
pub struct Container {
    id: String,
}

impl Container {
    /// Guards an existing container (id or name).
    pub fn guard(id: impl Into<String>) -> Container {
        Container { id: id.into() }
    }

    /// `docker create ARGS` and guard the result.
    pub fn create(args: &[&str]) -> Container {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        Container::guard(docker(&all))
    }

    /// `docker run -d ARGS` and guard the result.
    pub fn run_detached(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        Container::guard(docker(&all))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the container to stop; returns its exit code.
    pub fn wait(&self) -> i32 {
        let code = docker(&["wait", &self.id]);
        code.parse()
            .unwrap_or_else(|_| panic!("docker wait printed {code:?}"))
    }

    /// stdout and stderr so far (`docker logs`), separately.
    pub fn logs(&self) -> (String, String) {
        let out = Command::new("docker")
            .args(["logs", &self.id])
            .output()
            .unwrap_or_else(|e| panic!("docker logs: {e}"));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A swarm service removed (`docker service rm`) on Drop.
pub struct Service {
    name: String,
}

impl Service {
    /// Guards an existing service (name or id).
    pub fn guard(name: impl Into<String>) -> Service {
        Service { name: name.into() }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["service", "rm", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
