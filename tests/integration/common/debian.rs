//! Test images made from Debian's packages: a Debian 12 tree built with
//! debootstrap (`debian-image.sh`) and imported with `docker import`. An
//! image is tagged `NAME:HASH`, the hash of the recipe (the script, the
//! packages, the customization, the import changes), and reused while the
//! recipe is unchanged. Test processes that need an absent image at once
//! take turns on a lock file; the later ones find it built. It is never
//! skipped: without debootstrap or a reachable mirror the test fails and
//! says why.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The generic recipe; its text is part of every image's hash.
const SCRIPT: &str = include_str!("debian-image.sh");

/// What goes into a Debian test image.
#[derive(Debug, Clone, Copy)]
pub struct DebianRecipe<'a> {
    /// The image's name (its tag is the recipe's hash).
    pub name: &'a str,
    /// Debian packages installed with their dependencies.
    pub packages: &'a [&'a str],
    /// A shell script run after the install with the tree as `$1`
    /// (`chroot "$1" ...`); empty for none.
    pub customize: &'a str,
    /// `docker import --change` instructions.
    pub changes: &'a [&'a str],
}

/// A Debian test image present on the local daemon (kept after the test:
/// the next run reuses it).
#[derive(Debug, Clone)]
pub struct DebianImage {
    pub tag: String,
    /// How long building it took; `None`: it was there already.
    pub built_in: Option<Duration>,
}

/// The image of `packages` on plain Debian, built when absent; its tag.
pub fn debian_image(name: &str, packages: &[&str]) -> DebianImage {
    debian_image_with(&DebianRecipe {
        name,
        packages,
        customize: "",
        changes: &[],
    })
}

impl DebianRecipe<'_> {
    /// `NAME:` and the first 16 hex digits of the recipe's SHA-256.
    pub fn tag(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        // Every part length-prefixed: no two recipes hash alike.
        let parts = [SCRIPT, self.customize]
            .into_iter()
            .chain(std::iter::once("packages"))
            .chain(self.packages.iter().copied())
            .chain(std::iter::once("changes"))
            .chain(self.changes.iter().copied());
        for part in parts {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        let digest = ctx.finish();
        format!("{}:{}", self.name, &hex::encode(digest.as_ref())[..16])
    }
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The image of `recipe`, built when absent.
pub fn debian_image_with(recipe: &DebianRecipe) -> DebianImage {
    super::docker_ready();
    let tag = recipe.tag();
    if image_exists(&tag) {
        return DebianImage {
            tag,
            built_in: None,
        };
    }
    let lock_path = std::env::temp_dir().join(format!("{}-image.lock", recipe.name));
    let file =
        File::create(&lock_path).unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    // Held until the image is imported (released on return).
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e}", lock_path.display()));
    if image_exists(&tag) {
        return DebianImage {
            tag,
            built_in: None,
        };
    }
    super::require_program(
        "debootstrap",
        &format!(
            "apt-get install debootstrap (.ci/run installs it): the test image {} is made with it",
            recipe.name
        ),
    );
    let started = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let script = work.path().join("debian-image.sh");
    std::fs::write(&script, SCRIPT).expect("write the recipe");
    let customize = work.path().join("customize.sh");
    std::fs::write(&customize, recipe.customize).expect("write the customization");
    let tree = work.path().join("tree");
    let tarball = work.path().join("image.tar");
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .arg(&tree)
        .arg(&tarball)
        .arg(recipe.packages.join(","));
    if !recipe.customize.is_empty() {
        cmd.arg(&customize);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run debian-image.sh");
    assert!(
        out.status.success(),
        "building the test image {tag} with debootstrap failed ({}); is deb.debian.org reachable (or FORGE_DEBIAN_MIRROR set)?\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 30),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
    let mut import = vec!["import".to_string()];
    for change in recipe.changes {
        import.extend(["--change".to_string(), change.to_string()]);
    }
    import.extend([tarball.display().to_string(), tag.clone()]);
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    super::docker(&import);
    DebianImage {
        tag,
        built_in: Some(started.elapsed()),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
