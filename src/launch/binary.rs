//! Which static forgexec goes into a build container. The launcher knows
//! one binary per CPU architecture (`--forgexec FILE`: the one file, its
//! architecture read from its ELF header; `--forgexec DIR` or the install
//! layout: `forgexec-x86_64` and `forgexec-aarch64` in a directory) and picks
//! the one for where the build runs: the node's architecture (the swarm
//! node's `Description.Platform.Architecture`, the daemon's `Architecture`
//! in local mode), or the image's when the image says otherwise (an arm64
//! image run under emulation on an x86_64 node). In a swarm, the service's
//! `Placement.Platforms` keeps the scheduler to nodes with a binary (and,
//! when the registry tells the image's platforms, to those too).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{NodeSpecAvailabilityEnum, NodeState, Platform};
use bollard::Docker;

use super::LaunchError;
use crate::exit;

/// Where the install layout keeps the binaries, relative to the directory
/// above forge-launch's own (`PREFIX/bin/forge-launch` →
/// `PREFIX/lib/forgexec/forgexec-ARCH`).
pub const INSTALL_DIR: &str = "lib/forgexec";
/// The largest file read as a forgexec binary (the real ones are ~4 MiB).
pub const MAX_BINARY_BYTES: u64 = 64 * 1024 * 1024;
/// How long the registry may take to say which platforms an image has.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// A CPU architecture forgexec is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// From any of the names Docker and the kernel use: `uname -m`
    /// (`x86_64`, `aarch64`) and Go's (`amd64`, `arm64`).
    pub fn from_name(name: &str) -> Option<Arch> {
        match name.trim().to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x86-64" | "x64" => Some(Arch::X86_64),
            "aarch64" | "arm64" | "arm64/v8" | "armv8" => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The kernel's name (`uname -m`), as in the binaries' file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `forgexec-x86_64`, `forgexec-aarch64`.
    pub fn file_name(self) -> String {
        format!("forgexec-{}", self.name())
    }

    fn from_elf_machine(machine: u16) -> Option<Arch> {
        match machine {
            EM_X86_64 => Some(Arch::X86_64),
            EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why no binary could be found or chosen.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a forgexec binary: {reason}; pass the static build (./musl-build prints its path)")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is an {found} binary but its name says {expected}")]
    Misnamed {
        path: PathBuf,
        expected: Arch,
        found: Arch,
    },
    #[error("--forgexec {dir}: the directory holds neither forgexec-x86_64 nor forgexec-aarch64")]
    EmptyDir { dir: PathBuf },
    #[error("no forgexec binaries found: looked for forgexec-x86_64 and forgexec-aarch64 in {}; pass --forgexec PATH (a binary, or a directory holding them), set FORGE_LAUNCH_FORGEXEC, or install them with `./musl-build --install PREFIX` (docs/launcher.md, install layout)", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    NotInstalled { looked: Vec<PathBuf> },
    #[error("cannot find forge-launch's own path to look for its forgexec binaries ({reason}); pass --forgexec PATH or set FORGE_LAUNCH_FORGEXEC")]
    NoExe { reason: String },
    /// The node or image has an architecture without a binary.
    #[error("{where_}: no forgexec for {wanted} (have {have})")]
    NoBinaryFor {
        where_: String,
        wanted: String,
        have: String,
    },
    /// No swarm node can take the build.
    #[error("no ready swarm node can run this build: {reason} (have {have})")]
    NoNode { reason: String, have: String },
}

impl BinaryError {
    /// Exit code: finding the files is configuration (2), a node or image
    /// without a binary is infrastructure (3).
    pub fn exit_code(&self) -> u8 {
        match self {
            BinaryError::NoBinaryFor { .. } | BinaryError::NoNode { .. } => exit::INFRASTRUCTURE,
            _ => exit::INVALID,
        }
    }
}

/// How the binaries were given, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Dir(PathBuf),
}

/// The forgexec binaries the launcher can copy, at most one per
/// architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    files: Vec<(Arch, PathBuf)>,
    origin: Origin,
}

impl Binaries {
    /// `--forgexec PATH` (or `FORGE_LAUNCH_FORGEXEC`) when given, else the
    /// install layout next to this executable.
    pub fn locate(flag: Option<&Path>) -> Result<Binaries, BinaryError> {
        match flag {
            Some(path) => Binaries::from_path(path),
            None => {
                let exe = std::env::current_exe().map_err(|e| BinaryError::NoExe {
                    reason: e.to_string(),
                })?;
                Binaries::installed_beside(&exe)
            }
        }
    }

    /// A binary (its architecture from its ELF header) or a directory
    /// holding `forgexec-x86_64` and/or `forgexec-aarch64`.
    pub fn from_path(path: &Path) -> Result<Binaries, BinaryError> {
        let meta = std::fs::metadata(path).map_err(|source| BinaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            let arch = elf_arch(path)?;
            return Ok(Binaries {
                files: vec![(arch, path.to_path_buf())],
                origin: Origin::File(path.to_path_buf()),
            });
        }
        match Binaries::in_dir(path)? {
            Some(found) => Ok(found),
            None => Err(BinaryError::EmptyDir {
                dir: path.to_path_buf(),
            }),
        }
    }

    /// The install layout: `PREFIX/lib/forgexec/` for `PREFIX/bin/forge-launch`,
    /// then the executable's own directory.
    pub fn installed_beside(exe: &Path) -> Result<Binaries, BinaryError> {
        let looked = install_dirs(exe);
        for dir in &looked {
            if dir.is_dir() {
                if let Some(found) = Binaries::in_dir(dir)? {
                    tracing::debug!("forgexec binaries from {}", dir.display());
                    return Ok(found);
                }
            }
        }
        Err(BinaryError::NotInstalled { looked })
    }

    /// The `forgexec-ARCH` files of `dir`, each checked to be what its name
    /// says; `None` when there is neither.
    fn in_dir(dir: &Path) -> Result<Option<Binaries>, BinaryError> {
        let mut files = Vec::new();
        for arch in Arch::ALL {
            let path = dir.join(arch.file_name());
            if !path.exists() {
                continue;
            }
            let found = elf_arch(&path)?;
            if found != arch {
                return Err(BinaryError::Misnamed {
                    path,
                    expected: arch,
                    found,
                });
            }
            files.push((arch, path));
        }
        Ok((!files.is_empty()).then(|| Binaries {
            files,
            origin: Origin::Dir(dir.to_path_buf()),
        }))
    }

    /// The architectures there is a binary for.
    pub fn arches(&self) -> Vec<Arch> {
        self.files.iter().map(|(a, _)| *a).collect()
    }

    /// The binary for `arch`, if there is one.
    pub fn path(&self, arch: Arch) -> Option<&Path> {
        self.files
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, p)| p.as_path())
    }

    /// What there is, for messages: `x86_64 from --forgexec /p/forgexec`,
    /// `x86_64, aarch64 in /usr/local/lib/forgexec`.
    pub fn describe(&self) -> String {
        let arches: Vec<&str> = self.files.iter().map(|(a, _)| a.name()).collect();
        match &self.origin {
            Origin::File(path) => format!("{} from {}", arches.join(", "), path.display()),
            Origin::Dir(dir) => format!("{} in {}", arches.join(", "), dir.display()),
        }
    }

    /// The architecture to run: the image's when it names one, else the
    /// node's. `where_` names the node for the message.
    pub fn choose(
        &self,
        where_: &str,
        node_arch: Option<&str>,
        image_arch: Option<&str>,
    ) -> Result<Arch, BinaryError> {
        let node_arch = node_arch.map(str::trim).filter(|a| !a.is_empty());
        let image_arch = image_arch.map(str::trim).filter(|a| !a.is_empty());
        let wanted = image_arch.or(node_arch);
        let arch = wanted.and_then(Arch::from_name);
        match arch {
            Some(arch) if self.path(arch).is_some() => Ok(arch),
            _ => Err(BinaryError::NoBinaryFor {
                where_: format!(
                    "{where_} is {}, image is {}",
                    node_arch.unwrap_or("of unknown architecture"),
                    image_arch.unwrap_or("of unknown architecture")
                ),
                wanted: arch
                    .map(|a| a.name().to_string())
                    .or(wanted.map(str::to_string))
                    .unwrap_or_else(|| "an unknown architecture".into()),
                have: self.describe(),
            }),
        }
    }

    /// Reads the binary for `arch` (bounded; checked again, the file may
    /// have changed since it was located).
    pub fn read(&self, arch: Arch) -> Result<Vec<u8>, BinaryError> {
        let path = self.path(arch).ok_or_else(|| BinaryError::NoBinaryFor {
            where_: "the build".into(),
            wanted: arch.name().into(),
            have: self.describe(),
        })?;
        let bytes = read_bounded(path)?;
        let found = elf_header_arch(path, &bytes)?;
        if found != arch {
            return Err(BinaryError::Misnamed {
                path: path.to_path_buf(),
                expected: arch,
                found,
            });
        }
        Ok(bytes)
    }

    /// The service's `Placement.Platforms`: the architectures with a binary,
    /// narrowed to the image's platforms when the registry told them, and
    /// only if some ready node has one of them. Names use the kernel's
    /// spelling, which every swarmkit matches against nodes'
    /// (`Description.Platform.Architecture` is `uname -m`).
    pub fn placement(
        &self,
        image: &str,
        image_platforms: Option<&[String]>,
        node_arches: &[String],
    ) -> Result<Vec<Arch>, BinaryError> {
        let mut usable = self.arches();
        if let Some(platforms) = image_platforms.filter(|p| !p.is_empty()) {
            let image_arches: Vec<Arch> = platforms
                .iter()
                .filter_map(|p| Arch::from_name(p))
                .collect();
            usable.retain(|a| image_arches.contains(a));
            if usable.is_empty() {
                return Err(BinaryError::NoBinaryFor {
                    where_: format!("image {image} is for {}", platforms.join(", ")),
                    wanted: "any of them".into(),
                    have: self.describe(),
                });
            }
        }
        let runnable = node_arches
            .iter()
            .any(|n| Arch::from_name(n).is_some_and(|a| usable.contains(&a)));
        if !runnable {
            let nodes = if node_arches.is_empty() {
                "the swarm has no ready, active node".to_string()
            } else {
                format!("the ready nodes are {}", count_names(node_arches))
            };
            let wanted: Vec<&str> = usable.iter().map(|a| a.name()).collect();
            return Err(BinaryError::NoNode {
                reason: format!("{nodes}, the build needs {}", wanted.join(" or ")),
                have: self.describe(),
            });
        }
        Ok(usable)
    }
}

/// Where the install layout is looked for, in order.
pub fn install_dirs(exe: &Path) -> Vec<PathBuf> {
    let Some(bin) = exe.parent() else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    if let Some(prefix) = bin.parent() {
        dirs.push(prefix.join(INSTALL_DIR));
    }
    dirs.push(bin.to_path_buf());
    dirs
}

/// `x86_64 (2), aarch64` from a list of node architectures.
fn count_names(names: &[String]) -> String {
    let mut counted: Vec<(String, usize)> = Vec::new();
    for name in names {
        match counted.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += 1,
            None => counted.push((name.clone(), 1)),
        }
    }
    counted
        .iter()
        .map(|(n, c)| format!("{n} ({c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, BinaryError> {
    let read_err = |source| BinaryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_BINARY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_BINARY_BYTES {
        return Err(BinaryError::NotElf {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_BINARY_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// The architecture of an ELF file from the first bytes of its header.
fn elf_arch(path: &Path) -> Result<Arch, BinaryError> {
    let read_err = |source| BinaryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut header = Vec::with_capacity(64);
    file.take(64).read_to_end(&mut header).map_err(read_err)?;
    elf_header_arch(path, &header)
}

/// Reads `e_machine` of a 64-bit ELF header.
fn elf_header_arch(path: &Path, bytes: &[u8]) -> Result<Arch, BinaryError> {
    let bad = |reason: String| BinaryError::NotElf {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("no ELF header".into()));
    }
    if bytes[4] != 2 {
        return Err(bad("a 32-bit ELF file".into()));
    }
    let raw = [bytes[18], bytes[19]];
    let machine = match bytes[5] {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        other => return Err(bad(format!("unknown ELF byte order {other}"))),
    };
    Arch::from_elf_machine(machine).ok_or_else(|| {
        bad(format!(
            "built for ELF machine {machine}, not x86_64 ({EM_X86_64}) or aarch64 ({EM_AARCH64})"
        ))
    })
}

/// `Placement.Platforms` entries for these architectures.
pub fn platforms(arches: &[Arch]) -> Vec<Platform> {
    arches
        .iter()
        .map(|a| Platform {
            architecture: Some(a.name().to_string()),
            os: Some("linux".into()),
        })
        .collect()
}

/// Local mode: the binary for the daemon's architecture, or the image's
/// when it says otherwise. A missing image is left to container creation
/// to report.
pub async fn for_local_daemon(
    docker: &Docker,
    binaries: &Binaries,
    image: &str,
) -> Result<Vec<u8>, LaunchError> {
    let info = docker
        .info()
        .await
        .map_err(|e| LaunchError::docker("reading the daemon's info", e))?;
    let image_arch = docker
        .inspect_image(image)
        .await
        .ok()
        .and_then(|i| i.architecture);
    let arch = binaries.choose(
        "the local daemon",
        info.architecture.as_deref(),
        image_arch.as_deref(),
    )?;
    tracing::info!("local mode: forgexec for {arch} ({})", binaries.describe());
    Ok(binaries.read(arch)?)
}

/// Swarm mode, before the service exists: the platforms to place the
/// build on (see [`Binaries::placement`]).
pub async fn swarm_placement(
    docker: &Docker,
    binaries: &Binaries,
    image: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> Result<Vec<Platform>, LaunchError> {
    let nodes = docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .map_err(|e| LaunchError::docker("listing the swarm's nodes", e))?;
    let node_arches: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY)
                && n.spec.as_ref().and_then(|s| s.availability)
                    == Some(NodeSpecAvailabilityEnum::ACTIVE)
        })
        .filter_map(|n| {
            n.description
                .as_ref()
                .and_then(|d| d.platform.as_ref())
                .and_then(|p| p.architecture.clone())
        })
        .collect();
    let image_platforms = registry_platforms(docker, image, credentials).await;
    let arches = binaries.placement(image, image_platforms.as_deref(), &node_arches)?;
    Ok(platforms(&arches))
}

/// The image's platforms as its registry lists them (what `docker service
/// create` puts into `Placement.Platforms`); `None` when the registry
/// cannot be asked (a local image, no network, private without
/// credentials): the placement then only requires a binary.
async fn registry_platforms(
    docker: &Docker,
    image: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> Option<Vec<String>> {
    let asked = tokio::time::timeout(
        REGISTRY_TIMEOUT,
        docker.inspect_registry_image(image, credentials),
    )
    .await;
    match asked {
        Ok(Ok(found)) => {
            let names: Vec<String> = found
                .platforms
                .iter()
                .filter(|p| p.os.as_deref().is_none_or(|os| os == "linux"))
                .filter_map(|p| p.architecture.clone())
                .collect();
            tracing::debug!("image {image}: registry lists {names:?}");
            Some(names)
        }
        Ok(Err(e)) => {
            tracing::debug!("image {image}: registry not asked ({e})");
            None
        }
        Err(_) => {
            tracing::debug!("image {image}: registry gave no answer within {REGISTRY_TIMEOUT:?}");
            None
        }
    }
}

/// Swarm mode, once the task's container exists: the binary for its
/// node's architecture, or its image's when that says otherwise.
pub async fn for_task(
    manager: &Docker,
    node_docker: &Docker,
    node_id: &str,
    container: &str,
    binaries: &Binaries,
) -> Result<Vec<u8>, LaunchError> {
    let node = manager
        .inspect_node(node_id)
        .await
        .map_err(|e| LaunchError::docker(format!("inspecting node {node_id}"), e))?;
    let description = node.description.unwrap_or_default();
    let node_arch = description.platform.and_then(|p| p.architecture);
    let image_id = node_docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| LaunchError::docker(format!("inspecting container {container}"), e))?
        .image;
    let image_arch = match image_id {
        Some(id) => {
            node_docker
                .inspect_image(&id)
                .await
                .map_err(|e| LaunchError::docker(format!("inspecting image {id}"), e))?
                .architecture
        }
        None => None,
    };
    let name = description.hostname.unwrap_or_else(|| node_id.to_string());
    let arch = binaries.choose(
        &format!("node {name}"),
        node_arch.as_deref(),
        image_arch.as_deref(),
    )?;
    tracing::info!("node {name}: forgexec for {arch}");
    read_off_runtime(binaries, arch).await
}

/// [`Binaries::read`] on the blocking pool: reading and checking megabytes
/// on an async worker would stall everything else a busy `serve` does,
/// its webhook acknowledgements first.
async fn read_off_runtime(binaries: &Binaries, arch: Arch) -> Result<Vec<u8>, LaunchError> {
    let binaries = binaries.clone();
    tokio::task::spawn_blocking(move || binaries.read(arch))
        .await
        .map_err(|e| LaunchError::io("reading forgexec", std::io::Error::other(e)))?
        .map_err(LaunchError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header for `machine`.
    fn elf(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn names_of_both_conventions_map_to_one_arch() {
        for n in ["x86_64", "amd64", "AMD64"] {
            assert_eq!(Arch::from_name(n), Some(Arch::X86_64), "{n}");
        }
        for n in ["aarch64", "arm64", " arm64 "] {
            assert_eq!(Arch::from_name(n), Some(Arch::Aarch64), "{n}");
        }
        for n in ["arm", "s390x", "ppc64le", "riscv64", ""] {
            assert_eq!(Arch::from_name(n), None, "{n}");
        }
        assert_eq!(Arch::Aarch64.file_name(), "forgexec-aarch64");
    }

    #[test]
    fn a_file_is_known_by_its_elf_machine() {
        let dir = tempfile::tempdir().unwrap();
        let arm = write(dir.path(), "forgexec", &elf(EM_AARCH64));
        let b = Binaries::from_path(&arm).unwrap();
        assert_eq!(b.arches(), [Arch::Aarch64]);
        assert!(
            b.describe().starts_with("aarch64 from "),
            "{}",
            b.describe()
        );

        let mut big_endian = elf(0);
        big_endian[5] = 2;
        big_endian[18..20].copy_from_slice(&EM_X86_64.to_be_bytes());
        let p = write(dir.path(), "be", &big_endian);
        assert_eq!(Binaries::from_path(&p).unwrap().arches(), [Arch::X86_64]);

        for (name, bytes, says) in [
            ("script", b"#!/bin/sh\n".to_vec(), "no ELF header"),
            ("riscv", elf(243), "ELF machine 243"),
            ("empty", Vec::new(), "no ELF header"),
        ] {
            let p = write(dir.path(), name, &bytes);
            let err = Binaries::from_path(&p).unwrap_err().to_string();
            assert!(err.contains(says), "{name}: {err}");
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        let mut elf32 = elf(EM_X86_64);
        elf32[4] = 1;
        let p = write(dir.path(), "elf32", &elf32);
        assert!(Binaries::from_path(&p)
            .unwrap_err()
            .to_string()
            .contains("32-bit"));
        let missing = dir.path().join("nope");
        assert!(matches!(
            Binaries::from_path(&missing),
            Err(BinaryError::Read { .. })
        ));
    }

    #[test]
    fn a_directory_holds_one_binary_per_arch_named_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::from_path(dir.path()).unwrap_err();
        assert!(matches!(err, BinaryError::EmptyDir { .. }), "{err}");
        write(dir.path(), "forgexec-x86_64", &elf(EM_X86_64));
        let b = Binaries::from_path(dir.path()).unwrap();
        assert_eq!(b.arches(), [Arch::X86_64]);
        write(dir.path(), "forgexec-aarch64", &elf(EM_AARCH64));
        let b = Binaries::from_path(dir.path()).unwrap();
        assert_eq!(b.arches(), [Arch::X86_64, Arch::Aarch64]);
        assert_eq!(
            b.describe(),
            format!("x86_64, aarch64 in {}", dir.path().display())
        );
        assert_eq!(b.read(Arch::Aarch64).unwrap(), elf(EM_AARCH64));

        // a file whose header contradicts its name is refused
        write(dir.path(), "forgexec-aarch64", &elf(EM_X86_64));
        let err = Binaries::from_path(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("forgexec-aarch64 is an x86_64 binary but its name says aarch64"),
            "{err}"
        );
    }

    #[test]
    fn the_install_layout_is_next_to_the_executable() {
        let root = tempfile::tempdir().unwrap();
        let exe = root.path().join("bin/forge-launch");
        assert_eq!(
            install_dirs(&exe),
            [root.path().join("lib/forgexec"), root.path().join("bin")]
        );
        let err = Binaries::installed_beside(&exe).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "in {} and {}",
                root.path().join("lib/forgexec").display(),
                root.path().join("bin").display()
            )),
            "{err}"
        );
        assert!(err.contains("--forgexec") && err.contains("./musl-build --install PREFIX"));

        // beside the executable works (an unpacked tarball)...
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        write(&root.path().join("bin"), "forgexec-x86_64", &elf(EM_X86_64));
        let b = Binaries::installed_beside(&exe).unwrap();
        assert_eq!(
            b.path(Arch::X86_64).unwrap(),
            root.path().join("bin/forgexec-x86_64")
        );
        // ...and PREFIX/lib/forgexec comes first
        let lib = root.path().join("lib/forgexec");
        std::fs::create_dir_all(&lib).unwrap();
        write(&lib, "forgexec-aarch64", &elf(EM_AARCH64));
        let b = Binaries::installed_beside(&exe).unwrap();
        assert_eq!(b.arches(), [Arch::Aarch64]);
    }

    fn both() -> (tempfile::TempDir, Binaries) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "forgexec-x86_64", &elf(EM_X86_64));
        write(dir.path(), "forgexec-aarch64", &elf(EM_AARCH64));
        let b = Binaries::from_path(dir.path()).unwrap();
        (dir, b)
    }

    #[test]
    fn the_image_architecture_wins_over_the_nodes() {
        let (_dir, b) = both();
        assert_eq!(b.choose("n", Some("x86_64"), None).unwrap(), Arch::X86_64);
        assert_eq!(
            b.choose("n", Some("x86_64"), Some("amd64")).unwrap(),
            Arch::X86_64
        );
        assert_eq!(
            b.choose("n", Some("x86_64"), Some("arm64")).unwrap(),
            Arch::Aarch64
        );
        assert_eq!(
            b.choose("n", Some("aarch64"), Some("")).unwrap(),
            Arch::Aarch64
        );
        let err = b
            .choose("node n1", Some("x86_64"), Some("s390x"))
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::INFRASTRUCTURE);
        let msg = err.to_string();
        assert!(
            msg.starts_with("node n1 is x86_64, image is s390x: no forgexec for s390x (have x86_64, aarch64 in "),
            "{msg}"
        );
        assert!(b.choose("n", None, None).is_err());
    }

    #[test]
    fn one_file_serves_only_its_own_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "forgexec", &elf(EM_X86_64));
        let b = Binaries::from_path(&p).unwrap();
        assert_eq!(b.choose("n", Some("x86_64"), None).unwrap(), Arch::X86_64);
        let msg = b
            .choose("the local daemon", Some("x86_64"), Some("arm64"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "the local daemon is x86_64, image is arm64: no forgexec for aarch64 (have x86_64 from {})",
                p.display()
            )
        );
        assert!(b.read(Arch::Aarch64).is_err());
    }

    #[test]
    fn placement_needs_a_binary_an_image_platform_and_a_node() {
        let (_dir, b) = both();
        let nodes = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // unknown image platforms: every arch with a binary
        assert_eq!(
            b.placement("img", None, &nodes(&["x86_64"])).unwrap(),
            [Arch::X86_64, Arch::Aarch64]
        );
        // the registry's list narrows it
        let listed = nodes(&["arm64", "arm"]);
        assert_eq!(
            b.placement("img", Some(&listed), &nodes(&["aarch64", "x86_64"]))
                .unwrap(),
            [Arch::Aarch64]
        );
        // an image for other architectures only
        let listed = nodes(&["s390x", "ppc64le"]);
        let msg = b
            .placement("img:1", Some(&listed), &nodes(&["x86_64"]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("image img:1 is for s390x, ppc64le: no forgexec for any of them"),
            "{msg}"
        );
        // an aarch64-only binary on x86_64 nodes
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "forgexec", &elf(EM_AARCH64));
        let arm = Binaries::from_path(&p).unwrap();
        let err = arm
            .placement("img", None, &nodes(&["x86_64", "x86_64"]))
            .unwrap_err();
        assert_eq!(err.exit_code(), exit::INFRASTRUCTURE);
        let msg = err.to_string();
        assert!(
            msg.starts_with("no ready swarm node can run this build: the ready nodes are x86_64 (2), the build needs aarch64 (have aarch64 from "),
            "{msg}"
        );
        assert!(arm
            .placement("img", None, &[])
            .unwrap_err()
            .to_string()
            .contains("no ready, active node"));
    }

    #[test]
    fn platforms_use_the_kernels_names() {
        let json = serde_json::to_value(platforms(&[Arch::X86_64, Arch::Aarch64])).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"Architecture": "x86_64", "OS": "linux"},
                {"Architecture": "aarch64", "OS": "linux"}
            ])
        );
    }

    #[test]
    fn an_oversized_file_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("forgexec-x86_64");
        let f = std::fs::File::create(&p).unwrap();
        std::io::Write::write_all(&mut &f, &elf(EM_X86_64)).unwrap();
        f.set_len(MAX_BINARY_BYTES + 10).unwrap();
        let b = Binaries::from_path(dir.path()).unwrap();
        let msg = b.read(Arch::X86_64).unwrap_err().to_string();
        assert!(msg.contains("larger than"), "{msg}");
    }
}
