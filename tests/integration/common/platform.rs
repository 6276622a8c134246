//! The CPU a test's build runs on. [`Platform::host`] is this machine's
//! (x86_64): the static forgexec, Debian's busybox-static, `docker import`.
//! [`Platform::aarch64`] runs under qemu-user through binfmt_misc: the
//! aarch64 static forgexec (`./musl-build --target aarch64`), busybox from
//! Debian's `busybox-static:arm64` (`apt-get download` + `dpkg-deb -x`),
//! and images whose config says `arm64`. A test on aarch64 without the
//! emulation registered fails and says how to set it up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::docker::{busybox_rootfs_from, import_image, import_image_for, Image};
use super::{manifest_dir, static_forgexec, static_forgexec_aarch64};

/// The binfmt_misc entry Debian's qemu-user-static registers for aarch64.
pub const BINFMT_ENTRY: &str = "/proc/sys/fs/binfmt_misc/qemu-aarch64";

const SETUP_HINT: &str =
    "install qemu-user-static (apt-get install qemu-user-static) and run tests/run, \
     which mounts binfmt_misc and registers /usr/lib/binfmt.d/qemu-aarch64.conf; by hand: \
     `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
     cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register`";

/// Where builds of one architecture come from.
pub struct Platform {
    /// The kernel's name: `x86_64`, `aarch64`.
    pub arch: &'static str,
    /// The static forgexec for it.
    pub forgexec: PathBuf,
    /// A static busybox for it.
    pub busybox: PathBuf,
    /// Go's name for the image config, or `None` for `docker import` (the
    /// daemon's own architecture).
    image_arch: Option<&'static str>,
}

impl Platform {
    /// This machine: x86_64.
    pub fn host() -> Platform {
        let busybox = PathBuf::from("/bin/busybox");
        assert!(
            busybox.is_file(),
            "busybox not installed: run .ci/run or apt-get install busybox-static"
        );
        Platform {
            arch: "x86_64",
            forgexec: static_forgexec(),
            busybox,
            image_arch: None,
        }
    }

    /// aarch64 under emulation; panics with what to install when the
    /// emulation is not there.
    pub fn aarch64() -> Platform {
        require_aarch64_emulation();
        Platform {
            arch: "aarch64",
            forgexec: static_forgexec_aarch64(),
            busybox: arm64_busybox(),
            image_arch: Some("arm64"),
        }
    }

    /// An image of `rootfs` for this platform (removed on drop).
    pub fn import(&self, tag: &str, rootfs: &Path) -> Image {
        match self.image_arch {
            None => import_image(tag, rootfs),
            Some(arch) => import_image_for(tag, rootfs, arch),
        }
    }

    /// Fills `dir` with this platform's busybox root (see
    /// [`super::busybox_rootfs`]).
    pub fn busybox_rootfs(&self, dir: &Path) {
        busybox_rootfs_from(dir, &self.busybox);
    }
}

/// Panics unless aarch64 ELF files run here through binfmt_misc, with the
/// `F` flag (the interpreter opened at registration, so it also works
/// inside containers, whose root has no qemu).
pub fn require_aarch64_emulation() {
    let entry = std::fs::read_to_string(BINFMT_ENTRY).unwrap_or_else(|e| {
        panic!("aarch64 emulation is not registered ({BINFMT_ENTRY}: {e}): {SETUP_HINT}")
    });
    assert!(
        entry.lines().next() == Some("enabled"),
        "aarch64 emulation is registered but disabled ({BINFMT_ENTRY}: {entry}): \
         echo 1 > {BINFMT_ENTRY}"
    );
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    assert!(
        flags.contains('F'),
        "the aarch64 binfmt entry lacks the F flag (flags: {flags:?}), so containers cannot \
         find qemu: echo -1 > {BINFMT_ENTRY}, then {SETUP_HINT}"
    );
}

/// Debian's static busybox for arm64, fetched once into the target
/// directory.
pub fn arm64_busybox() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(fetch_arm64_busybox).clone()
}

fn fetch_arm64_busybox() -> PathBuf {
    let cache = manifest_dir().join("target/test-cache/busybox-static-arm64");
    let bin = cache.join("busybox");
    if bin.is_file() {
        return bin;
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap_or_else(|e| panic!("cannot run dpkg (a Debian machine is needed): {e}"));
    assert!(
        String::from_utf8_lossy(&foreign.stdout)
            .lines()
            .any(|l| l.trim() == "arm64"),
        "dpkg does not know arm64 packages: dpkg --add-architecture arm64 && apt-get update \
         (.ci/run and ./musl-build --target aarch64 do)"
    );
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    let work = tempfile::tempdir_in(&cache).expect("tempdir");
    let download = Command::new("apt-get")
        .args(["download", "-q", "busybox-static:arm64"])
        .current_dir(work.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run apt-get: {e}"));
    assert!(
        download.status.success(),
        "apt-get download busybox-static:arm64 failed (run apt-get update?):\n{}",
        String::from_utf8_lossy(&download.stderr)
    );
    let deb = std::fs::read_dir(work.path())
        .expect("read download dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("apt-get download left a .deb");
    let root = work.path().join("root");
    let unpack = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dpkg-deb: {e}"));
    assert!(
        unpack.status.success(),
        "dpkg-deb -x {} failed: {}",
        deb.display(),
        String::from_utf8_lossy(&unpack.stderr)
    );
    let unpacked = root.join("bin/busybox");
    assert!(unpacked.is_file(), "{} has no bin/busybox", deb.display());
    // Whole or not at all, even with another test process racing.
    std::fs::rename(&unpacked, &bin)
        .unwrap_or_else(|e| panic!("move busybox to {}: {e}", bin.display()));
    bin
}
