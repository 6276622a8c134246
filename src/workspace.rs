//! The workspace: the source tree a build runs in. The forge delivers it as
//! a zipball whose entries all sit under one top folder
//! (`owner-repo-sha/`); [`unpack_zip`] extracts it with that folder
//! stripped and refuses, naming the entry, anything that could write outside
//! the destination: `..` components, absolute paths, entries outside the top
//! folder, symlinks that lead out of the tree (also through other links of
//! the archive), and entries that would be written through a symlink; and,
//! per [`UnpackLimits`], archives that would unpack to too much (zip bombs:
//! overlapping entries, too many bytes or entries, extreme compression
//! ratios). Unix permission bits are kept, so scripts stay executable.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::ZipArchive;

use crate::facts::var;

/// Unix file type bits and the symlink type, as stored in zip external
/// attributes.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;
/// Longest symlink target read from an archive.
const MAX_LINK_TARGET: u64 = 4096;
/// Entries smaller than this (unpacked) are not judged by their ratio: a
/// small file of repeated text compresses well and harms nobody.
pub const RATIO_MIN_BYTES: u64 = 1024 * 1024;

/// How much a source archive may unpack to (docs/environment.md, "Limits");
/// each is raised by its `FORGE_UNPACK_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Entries of any kind.
    pub max_entries: u64,
    /// Unpacked size over compressed size, for entries of at least
    /// [`RATIO_MIN_BYTES`].
    pub max_ratio: u64,
}

impl UnpackLimits {
    pub const DEFAULT: UnpackLimits = UnpackLimits {
        max_bytes: 16 * 1024 * 1024 * 1024,
        max_entries: 1_000_000,
        max_ratio: 200,
    };
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which limit an archive exceeds; the message names the variable that
/// raises it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "it unpacks to more than {max} bytes ({} raises the limit)",
        var::UNPACK_MAX_BYTES
    )]
    Bytes { max: u64 },
    #[error(
        "it has {count} entries, more than {max} ({} raises the limit)",
        var::UNPACK_MAX_ENTRIES
    )]
    Entries { count: u64, max: u64 },
    #[error(
        "entry {entry:?} expands {ratio}:1, more than {max}:1 ({} raises the limit)",
        var::UNPACK_MAX_RATIO
    )]
    Ratio { entry: String, ratio: u64, max: u64 },
}

/// Errors of unpacking a source archive.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("unpacking stopped: the build was cancelled")]
    Cancelled,
    #[error("the source archive is not a readable zip file: {source}")]
    Archive {
        #[source]
        source: ZipError,
    },
    #[error("the source archive is empty")]
    Empty,
    #[error("{0}")]
    Limit(LimitExceeded),
    #[error("its entries overlap (one stored file unpacked under several names)")]
    Overlapping,
    #[error("refusing archive entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error(
        "refusing archive entry {entry:?}: it is not under the archive's single top folder {top:?}"
    )]
    NotUnderTop { entry: String, top: String },
    #[error(
        "refusing archive entry {entry:?}: symlink target {target:?} leads outside the workspace"
    )]
    SymlinkEscape { entry: String, target: String },
    #[error("refusing archive entry {entry:?}: it holds more than the {size} bytes it declares")]
    Oversized { entry: String, size: u64 },
    /// Reading an entry failed; `InvalidData` means its content contradicts
    /// its headers (sizes, CRC-32).
    #[error("cannot unpack archive entry {entry:?}: {source}")]
    EntryRead {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WorkspaceError {
    /// The archive's content is refused (the pull request's doing), as
    /// opposed to an archive that could not be read or written.
    pub fn is_refusal(&self) -> bool {
        match self {
            WorkspaceError::Archive { .. }
            | WorkspaceError::Io { .. }
            | WorkspaceError::Cancelled => false,
            WorkspaceError::EntryRead { source, .. } => source.kind() == io::ErrorKind::InvalidData,
            _ => true,
        }
    }
}

/// What [`unpack_zip`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// The stripped top folder (e.g. `octo-hello-0123abc`).
    pub top: String,
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// One entry to write, checked.
struct Planned {
    index: usize,
    name: String,
    /// Its path below the top folder.
    rel: Vec<String>,
    kind: Kind,
    mode: Option<u32>,
    /// The unpacked size it declares.
    size: u64,
}

enum Kind {
    Dir,
    File,
    Symlink(String),
}

/// Every entry of an archive, checked, and its top folder.
struct Plan {
    top: String,
    entries: Vec<Planned>,
}

/// Unpack a zip archive into `dest` (created if missing) with its single
/// top folder stripped. Every entry is checked, against `limits` too,
/// before anything is written, so a refused archive leaves `dest`
/// untouched; what an entry really holds is counted as it is written.
pub fn unpack_zip<R: Read + Seek>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackSummary, WorkspaceError> {
    unpack_zip_until(reader, dest, limits, &|| false)
}

/// [`unpack_zip`] that stops, leaving `dest` empty, as soon as `cancelled`
/// says so: it is asked before each entry and each 64 KiB written, so a
/// build's cancellation never waits for a large unpack.
pub fn unpack_zip_until<R: Read + Seek>(
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
    cancelled: &dyn Fn() -> bool,
) -> Result<UnpackSummary, WorkspaceError> {
    let mut archive = open_archive(reader, limits)?;
    let plan = plan_entries(&mut archive, limits)?;
    check_links(&plan.entries)?;
    fs::create_dir_all(dest).map_err(io_error(dest))?;
    let mut summary = UnpackSummary {
        top: plan.top,
        ..UnpackSummary::default()
    };
    if let Err(err) = write_tree(&mut archive, &plan.entries, dest, &mut summary, cancelled) {
        // The links were judged with the whole tree in place: half of it is
        // no workspace.
        remove_contents(dest);
        return Err(err);
    }
    Ok(summary)
}

/// Directories and files, then the symlinks, then the directory modes.
fn write_tree<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    entries: &[Planned],
    dest: &Path,
    summary: &mut UnpackSummary,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), WorkspaceError> {
    let dir_modes = write_entries(archive, entries, dest, summary, cancelled)?;
    create_links(entries, dest, summary)?;
    for (path, mode) in dir_modes.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io_error(path))?;
    }
    Ok(())
}

/// Empties `dir` (best effort; links are removed, never followed).
fn remove_contents(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
    }
}

fn archive_error(source: ZipError) -> WorkspaceError {
    WorkspaceError::Archive { source }
}

/// The archive, when it is a zip with entries, within the entry limit, and
/// no two entries share bytes (how a small zip names one huge stored entry
/// many times).
fn open_archive<R: Read + Seek>(
    reader: R,
    limits: &UnpackLimits,
) -> Result<ZipArchive<R>, WorkspaceError> {
    let mut archive = ZipArchive::new(reader).map_err(archive_error)?;
    if archive.is_empty() {
        return Err(WorkspaceError::Empty);
    }
    let count = archive.len() as u64;
    if count > limits.max_entries {
        return Err(WorkspaceError::Limit(LimitExceeded::Entries {
            count,
            max: limits.max_entries,
        }));
    }
    if archive.has_overlapping_entries().map_err(archive_error)? {
        return Err(WorkspaceError::Overlapping);
    }
    Ok(archive)
}

/// Names, kinds, symlink targets and declared sizes of every entry, each
/// checked; the declared sizes against the byte and ratio limits.
fn plan_entries<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    limits: &UnpackLimits,
) -> Result<Plan, WorkspaceError> {
    let mut entries = Vec::with_capacity(archive.len());
    let mut top: Option<String> = None;
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(archive_error)?;
        let name = file.name().map_err(archive_error)?.into_owned();
        let components = entry_components(&name).map_err(|reason| WorkspaceError::UnsafeEntry {
            entry: name.clone(),
            reason,
        })?;
        let top = top.get_or_insert_with(|| components[0].to_string());
        if top != components[0] {
            return Err(WorkspaceError::NotUnderTop {
                entry: name,
                top: top.clone(),
            });
        }
        let mode = file.unix_mode();
        let is_link = mode.is_some_and(|m| m & S_IFMT == S_IFLNK);
        let rel = &components[1..];
        if rel.is_empty() {
            if file.is_dir() && !is_link {
                continue;
            }
            return Err(WorkspaceError::NotUnderTop {
                entry: name,
                top: top.clone(),
            });
        }
        let size = file.size();
        check_ratio(&name, size, file.compressed_size(), limits)?;
        total = total.saturating_add(size);
        if total > limits.max_bytes {
            return Err(WorkspaceError::Limit(LimitExceeded::Bytes {
                max: limits.max_bytes,
            }));
        }
        let kind = if is_link {
            let mut target = String::new();
            (&mut file)
                .take(MAX_LINK_TARGET)
                .read_to_string(&mut target)
                .map_err(|_| WorkspaceError::UnsafeEntry {
                    entry: name.clone(),
                    reason: "symlink target is not readable UTF-8",
                })?;
            Kind::Symlink(target)
        } else if file.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        entries.push(Planned {
            index,
            rel: rel.iter().map(|c| c.to_string()).collect(),
            name,
            kind,
            mode,
            size,
        });
    }
    Ok(Plan {
        top: top.unwrap_or_default(),
        entries,
    })
}

fn check_ratio(
    name: &str,
    size: u64,
    compressed: u64,
    limits: &UnpackLimits,
) -> Result<(), WorkspaceError> {
    if size < RATIO_MIN_BYTES {
        return Ok(());
    }
    let ratio = size / compressed.max(1);
    if ratio > limits.max_ratio {
        return Err(WorkspaceError::Limit(LimitExceeded::Ratio {
            entry: name.to_string(),
            ratio,
            max: limits.max_ratio,
        }));
    }
    Ok(())
}

/// Every symlink must resolve inside the tree, through the archive's
/// other links too, and no entry may be written through a link.
fn check_links(entries: &[Planned]) -> Result<(), WorkspaceError> {
    let mut tree = LinkTree::new();
    for entry in entries {
        let target = match &entry.kind {
            Kind::Symlink(target) => Some(target.as_str()),
            _ => None,
        };
        if !tree.add(&entry.rel, target) {
            return Err(WorkspaceError::UnsafeEntry {
                entry: entry.name.clone(),
                reason: "another entry has the same path",
            });
        }
    }
    for entry in entries {
        let Kind::Symlink(target) = &entry.kind else {
            continue;
        };
        match tree.check_link(&entry.rel, target) {
            Ok(()) => {}
            Err(LinkProblem::Escapes) => {
                return Err(WorkspaceError::SymlinkEscape {
                    entry: entry.name.clone(),
                    target: target.clone(),
                })
            }
            Err(LinkProblem::TooManyHops) => {
                return Err(WorkspaceError::UnsafeEntry {
                    entry: entry.name.clone(),
                    reason: "its symlink chain loops or follows more than 40 links",
                })
            }
        }
    }
    for entry in entries {
        if tree.under_link(&entry.rel) {
            return Err(WorkspaceError::UnsafeEntry {
                entry: entry.name.clone(),
                reason: "its path goes through a symlink",
            });
        }
    }
    Ok(())
}

/// Writes directories and files; returns the directories' modes, applied
/// last (a read-only directory would refuse its own files).
fn write_entries<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    entries: &[Planned],
    dest: &Path,
    summary: &mut UnpackSummary,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<(PathBuf, u32)>, WorkspaceError> {
    let mut dir_modes = Vec::new();
    for entry in entries {
        if cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        let path = entry_path(dest, entry)?;
        match &entry.kind {
            Kind::Dir => {
                fs::create_dir_all(&path).map_err(io_error(&path))?;
                dir_modes.push((path, entry.mode.map_or(0o755, |m| m & 0o777)));
                summary.dirs += 1;
            }
            Kind::Symlink(_) => {}
            Kind::File => {
                summary.bytes += write_file(archive, entry, &path, cancelled)?;
                summary.files += 1;
            }
        }
    }
    Ok(dir_modes)
}

/// Where `entry` goes under `dest`, when no existing part of the path is a
/// symlink.
fn entry_path(dest: &Path, entry: &Planned) -> Result<PathBuf, WorkspaceError> {
    let rel: Vec<&str> = entry.rel.iter().map(String::as_str).collect();
    check_no_symlink_on_path(dest, &rel, &entry.name)?;
    Ok(rel.iter().fold(dest.to_path_buf(), |p, c| p.join(c)))
}

/// Writes one file, at most the size it declares (a deflate stream can
/// hold more than its header says); returns the bytes written.
fn write_file<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    entry: &Planned,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, WorkspaceError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut file = archive.by_index(entry.index).map_err(archive_error)?;
    let mut out = fs::File::create(path).map_err(io_error(path))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(WorkspaceError::EntryRead {
                    entry: entry.name.clone(),
                    source,
                })
            }
        };
        if cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        written += n as u64;
        if written > entry.size {
            return Err(WorkspaceError::Oversized {
                entry: entry.name.clone(),
                size: entry.size,
            });
        }
        out.write_all(&buf[..n]).map_err(io_error(path))?;
    }
    let mode = entry.mode.map_or(0o644, |m| m & 0o777);
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_error(path))?;
    Ok(written)
}

/// Creates the symlinks, after everything else: no entry is written
/// through one.
fn create_links(
    entries: &[Planned],
    dest: &Path,
    summary: &mut UnpackSummary,
) -> Result<(), WorkspaceError> {
    for entry in entries {
        let Kind::Symlink(target) = &entry.kind else {
            continue;
        };
        let path = entry_path(dest, entry)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::os::unix::fs::symlink(target, &path).map_err(io_error(&path))?;
        summary.symlinks += 1;
    }
    Ok(())
}

/// The components of an entry name, or why it is unsafe. Empty and `.`
/// components are dropped; `..`, absolute and Windows-style names refused.
fn entry_components(name: &str) -> Result<Vec<&str>, &'static str> {
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\\') {
        return Err("backslash in path (Windows separator)");
    }
    if name.contains('\0') {
        return Err("NUL byte in path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("drive-letter path");
    }
    let mut components = Vec::new();
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` path component"),
            other => components.push(other),
        }
    }
    if components.is_empty() {
        return Err("empty path");
    }
    Ok(components)
}

/// Most symlinks one resolution follows, as Linux's path lookup does
/// (MAXSYMLINKS).
const MAX_LINK_HOPS: usize = 40;

/// Why a symlink of the archive is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkProblem {
    /// It leads, maybe through other links, outside the workspace.
    Escapes,
    /// Resolving it follows more than [`MAX_LINK_HOPS`] links (a loop).
    TooManyHops,
}

/// The tree the archive will create, as far as links are concerned: each
/// node is a path below the workspace root (node 0 is the root), and a node
/// that is a symlink has its target. Links are judged on it by where they
/// really lead once the tree exists, through every other link.
struct LinkTree<'a> {
    children: HashMap<(usize, &'a str), usize>,
    targets: Vec<Option<&'a str>>,
    /// Whether an entry of the archive names the node (not only a path
    /// through it).
    named: Vec<bool>,
}

impl<'a> LinkTree<'a> {
    fn new() -> Self {
        LinkTree {
            children: HashMap::new(),
            targets: vec![None],
            named: vec![false],
        }
    }

    /// Adds the path `rel` (and its parent directories); `target` when it
    /// is a symlink. False when another entry named the same path: the
    /// file system would hold only one of them, so the tree could not
    /// stand for it.
    fn add(&mut self, rel: &'a [String], target: Option<&'a str>) -> bool {
        let mut node = 0;
        for component in rel {
            let next = self.targets.len();
            node = *self
                .children
                .entry((node, component.as_str()))
                .or_insert(next);
            if node == next {
                self.targets.push(None);
                self.named.push(false);
            }
        }
        if std::mem::replace(&mut self.named[node], true) {
            return false;
        }
        self.targets[node] = target;
        true
    }

    /// Whether a parent directory of `rel` is a symlink of the archive.
    fn under_link(&self, rel: &[String]) -> bool {
        let mut node = 0;
        for component in &rel[..rel.len().saturating_sub(1)] {
            match self.children.get(&(node, component.as_str())) {
                Some(&child) if self.targets[child].is_some() => return true,
                Some(&child) => node = child,
                None => return false,
            }
        }
        false
    }

    /// Resolves `target` as the link at `rel` would: from its directory,
    /// replacing every component that is a link by where that link leads.
    fn check_link(&self, rel: &[String], target: &str) -> Result<(), LinkProblem> {
        let mut dir: Vec<Option<usize>> = Vec::with_capacity(rel.len());
        let mut node = Some(0);
        for component in &rel[..rel.len() - 1] {
            node = node.and_then(|n| self.children.get(&(n, component.as_str())).copied());
            dir.push(node);
        }
        let mut hops = 0;
        self.resolve(&mut dir, target, &mut hops)
    }

    /// Walks `target` from the directory `dir` (the nodes of its path; `None`
    /// for a path the archive does not create), leaving the result in `dir`.
    fn resolve(
        &self,
        dir: &mut Vec<Option<usize>>,
        target: &str,
        hops: &mut usize,
    ) -> Result<(), LinkProblem> {
        if target.is_empty() || target.starts_with('/') || target.contains('\0') {
            return Err(LinkProblem::Escapes);
        }
        for component in target.split('/') {
            match component {
                "" | "." => {}
                ".." => {
                    dir.pop().ok_or(LinkProblem::Escapes)?;
                }
                name => {
                    let parent = dir.last().copied().unwrap_or(Some(0));
                    let node = parent.and_then(|p| self.children.get(&(p, name)).copied());
                    match node.and_then(|n| self.targets[n]) {
                        Some(next) => {
                            *hops += 1;
                            if *hops > MAX_LINK_HOPS {
                                return Err(LinkProblem::TooManyHops);
                            }
                            self.resolve(dir, next, hops)?;
                        }
                        None => dir.push(node),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Refuse writing `dest/components...` when any existing prefix of it below
/// `dest` is a symlink (a link from the archive would redirect the write).
fn check_no_symlink_on_path(
    dest: &Path,
    components: &[&str],
    entry: &str,
) -> Result<(), WorkspaceError> {
    let mut path = dest.to_path_buf();
    for component in components {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(WorkspaceError::UnsafeEntry {
                    entry: entry.to_string(),
                    reason: "its path goes through a symlink",
                })
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;
    use zip::ZipWriter;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a str, u32),
        Link(&'a str, &'a str),
    }

    fn archive(entries: &[E]) -> Cursor<Vec<u8>> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for entry in entries {
            match entry {
                E::Dir(name) => zip
                    .add_directory(*name, SimpleFileOptions::default().unix_permissions(0o755))
                    .expect("dir"),
                E::File(name, content, mode) => {
                    zip.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
                        .expect("file");
                    zip.write_all(content.as_bytes()).expect("write");
                }
                E::Link(name, target) => zip
                    .add_symlink(*name, *target, SimpleFileOptions::default())
                    .expect("link"),
            }
        }
        let mut cursor = zip.finish().expect("finish");
        cursor.set_position(0);
        cursor
    }

    #[test]
    fn a_cancellation_stops_unpacking_and_leaves_the_workspace_empty() {
        let big = "x".repeat(300 * 1024);
        let entries = [
            E::Dir("top/"),
            E::File("top/a.txt", "first", 0o644),
            E::File("top/big.txt", &big, 0o644),
            E::File("top/z.txt", "last", 0o644),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ws");
        // Cancelled while the big file is being written (the fifth question:
        // before the dir, a.txt, big.txt, then during big.txt's chunks).
        let asked = std::cell::Cell::new(0);
        let cancelled = || {
            asked.set(asked.get() + 1);
            asked.get() > 5
        };
        let result = unpack_zip_until(archive(&entries), &dest, &UnpackLimits::DEFAULT, &cancelled);
        assert!(
            matches!(result, Err(WorkspaceError::Cancelled)),
            "{result:?}"
        );
        assert!(!result.unwrap_err().is_refusal());
        assert_eq!(std::fs::read_dir(&dest).expect("dest").count(), 0);
        assert_eq!(asked.get(), 6, "asked again after the cancellation");
        // Not cancelled: the same archive unpacks whole.
        let whole = dir.path().join("whole");
        unpack_zip_until(archive(&entries), &whole, &UnpackLimits::DEFAULT, &|| false)
            .expect("unpacked");
        assert_eq!(
            std::fs::read_to_string(whole.join("z.txt")).unwrap(),
            "last"
        );
    }

    fn unpack(entries: &[E]) -> (tempfile::TempDir, Result<UnpackSummary, WorkspaceError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ws");
        let result = unpack_zip(archive(entries), &dest, &UnpackLimits::DEFAULT);
        (dir, result)
    }

    #[test]
    fn strips_the_top_folder_and_keeps_modes_and_links() {
        let (dir, result) = unpack(&[
            E::Dir("o-r-abc/"),
            E::File("o-r-abc/README.md", "hello\n", 0o644),
            E::Dir("o-r-abc/bin/"),
            E::File("o-r-abc/bin/run.sh", "#!/bin/sh\necho hi\n", 0o755),
            E::File("o-r-abc/deep/er/file.txt", "x", 0o600),
            E::Link("o-r-abc/docs", "deep/er"),
            E::Link("o-r-abc/deep/up", "../README.md"),
        ]);
        let summary = result.expect("unpacks");
        assert_eq!(summary.top, "o-r-abc");
        assert_eq!((summary.files, summary.dirs, summary.symlinks), (3, 1, 2));
        let ws = dir.path().join("ws");
        assert_eq!(
            fs::read_to_string(ws.join("README.md")).expect("readme"),
            "hello\n"
        );
        let mode = |p: &str| fs::metadata(ws.join(p)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode("bin/run.sh"), 0o755);
        assert_eq!(mode("README.md"), 0o644);
        assert_eq!(mode("deep/er/file.txt"), 0o600);
        assert_eq!(
            fs::read_link(ws.join("docs")).expect("link"),
            PathBuf::from("deep/er")
        );
        assert_eq!(
            fs::read_to_string(ws.join("docs/file.txt")).expect("via link"),
            "x"
        );
        assert_eq!(
            fs::read_to_string(ws.join("deep/up")).expect("via up link"),
            "hello\n"
        );
    }

    #[test]
    fn refuses_dot_dot() {
        let (dir, result) = unpack(&[
            E::File("o-r-abc/ok.txt", "ok", 0o644),
            E::File("o-r-abc/../../x", "evil", 0o644),
        ]);
        match result {
            Err(WorkspaceError::UnsafeEntry { entry, reason }) => {
                assert_eq!(entry, "o-r-abc/../../x");
                assert!(reason.contains(".."));
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert!(!dir.path().join("x").exists());
        assert!(
            !dir.path().join("ws").exists(),
            "nothing written before checks pass"
        );
    }

    #[test]
    fn refuses_absolute_paths() {
        let (_dir, result) = unpack(&[E::File("/etc/evil", "x", 0o644)]);
        assert!(
            matches!(&result, Err(WorkspaceError::UnsafeEntry { entry, reason }) if entry == "/etc/evil" && reason.contains("absolute")),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_entries_outside_the_top_folder() {
        let (_dir, result) = unpack(&[
            E::File("o-r-abc/a", "a", 0o644),
            E::File("other/b", "b", 0o644),
        ]);
        assert!(
            matches!(&result, Err(WorkspaceError::NotUnderTop { entry, top }) if entry == "other/b" && top == "o-r-abc"),
            "{result:?}"
        );
        let (_dir, result) = unpack(&[E::File("loose.txt", "a", 0o644)]);
        assert!(
            matches!(result, Err(WorkspaceError::NotUnderTop { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn refuses_escaping_symlinks() {
        for target in ["../../etc", "/etc/passwd", "a/../../..", "x/../../../y"] {
            let (_dir, result) = unpack(&[E::Dir("o-r-abc/"), E::Link("o-r-abc/sub/link", target)]);
            assert!(
                matches!(&result, Err(WorkspaceError::SymlinkEscape { entry, target: t }) if entry == "o-r-abc/sub/link" && t == target),
                "{target}: {result:?}"
            );
        }
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        // `up` stays inside lexically, but a later entry under it must not
        // be written through it (it would land outside).
        let (dir, result) = unpack(&[
            E::Link("o-r-abc/a/up", ".."),
            E::Link("o-r-abc/a/up/b", ".."),
        ]);
        assert!(
            matches!(&result, Err(WorkspaceError::UnsafeEntry { entry, .. }) if entry == "o-r-abc/a/up/b"),
            "{result:?}"
        );
        assert!(
            !dir.path().join("ws").exists(),
            "nothing written before checks pass"
        );
    }

    #[test]
    fn refuses_garbage_and_empty_archives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = unpack_zip(
            Cursor::new(b"not a zip".to_vec()),
            dir.path(),
            &UnpackLimits::DEFAULT,
        );
        assert!(
            matches!(result, Err(WorkspaceError::Archive { .. })),
            "{result:?}"
        );
        let (_dir, result) = unpack(&[]);
        assert!(matches!(result, Err(WorkspaceError::Empty)), "{result:?}");
    }

    #[test]
    fn link_targets_resolve_through_other_links() {
        let rel = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
        let paths = [rel("a/b/l1"), rel("a/up"), rel("a/b/f"), rel("loop")];
        let mut tree = LinkTree::new();
        assert!(tree.add(&paths[0], Some("..")));
        assert!(tree.add(&paths[1], Some("..")));
        assert!(tree.add(&paths[2], None));
        assert!(tree.add(&paths[3], Some("loop/x")));
        assert!(!tree.add(&paths[3], None), "a second entry of one path");
        let check = |p: &str, target: &str| tree.check_link(&rel(p), target);
        assert_eq!(check("x", "a/b/f"), Ok(()));
        assert_eq!(check("a/x", "../a/b/l1/b/f"), Ok(()));
        assert_eq!(check("x", "."), Ok(()));
        assert_eq!(check("x", "a/up"), Ok(()));
        assert_eq!(check("a/b/x", "../../.."), Err(LinkProblem::Escapes));
        assert_eq!(check("x", "/x"), Err(LinkProblem::Escapes));
        assert_eq!(check("x", ""), Err(LinkProblem::Escapes));
        // Lexically inside, really outside: `up` is the root, `..` of it is not.
        assert_eq!(check("x", "a/up/.."), Err(LinkProblem::Escapes));
        assert_eq!(check("x", "a/b/l1/up/.."), Err(LinkProblem::Escapes));
        assert_eq!(check("x", "loop"), Err(LinkProblem::TooManyHops));
    }

    #[test]
    fn refuses_a_symlink_chain_that_leads_outside() {
        // issue 11: every link is lexically inside, but `l1` is the root,
        // so the six `..` after it leave the workspace.
        let (dir, result) = unpack(&[
            E::File("o-r-abc/README.md", "hi", 0o644),
            E::Link("o-r-abc/a/b/c/d/e/l1", "../../../../.."),
            E::Link(
                "o-r-abc/.forge.yml",
                "a/b/c/d/e/l1/../../../../../../tmp/outside/evil.yml",
            ),
        ]);
        assert!(
            matches!(&result, Err(WorkspaceError::SymlinkEscape { entry, .. }) if entry == "o-r-abc/.forge.yml"),
            "{result:?}"
        );
        assert!(!dir.path().join("ws").exists());
        // The first link alone is the root itself: fine.
        let (dir, result) = unpack(&[
            E::File("o-r-abc/README.md", "hi", 0o644),
            E::Link("o-r-abc/a/b/c/d/e/l1", "../../../../.."),
            E::Link("o-r-abc/readme", "a/b/c/d/e/l1/README.md"),
        ]);
        result.expect("links that stay inside unpack");
        assert_eq!(
            fs::read_to_string(dir.path().join("ws/readme")).expect("via the chain"),
            "hi"
        );
    }

    fn unpack_with(
        bytes: Vec<u8>,
        limits: &UnpackLimits,
    ) -> (tempfile::TempDir, Result<UnpackSummary, WorkspaceError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = unpack_zip(Cursor::new(bytes), &dir.path().join("ws"), limits);
        (dir, result)
    }

    #[test]
    fn refuses_overlapping_entries() {
        // issue 11: a small zip whose central directory names one large
        // entry many times.
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("o-r-abc/big", SimpleFileOptions::default())
            .expect("file");
        zip.write_all(&[0u8; 4096]).expect("write");
        for n in 0..20 {
            zip.shallow_copy_file("o-r-abc/big", &format!("o-r-abc/copy{n}"))
                .expect("copy");
        }
        let bytes = zip.finish().expect("finish").into_inner();
        let (dir, result) = unpack_with(bytes, &UnpackLimits::DEFAULT);
        assert!(
            matches!(result, Err(WorkspaceError::Overlapping)),
            "{result:?}"
        );
        assert!(!dir.path().join("ws").exists());
    }

    #[test]
    fn refuses_more_bytes_or_entries_than_the_limits_before_writing() {
        let entries = [
            E::File("o-r-abc/a", "0123456789", 0o644),
            E::File("o-r-abc/b", "0123456789", 0o644),
            E::Dir("o-r-abc/c/"),
        ];
        let bytes = archive(&entries).into_inner();
        let limits = UnpackLimits {
            max_bytes: 19,
            ..UnpackLimits::DEFAULT
        };
        let (dir, result) = unpack_with(bytes.clone(), &limits);
        let err = result.expect_err("over the byte limit");
        assert!(
            matches!(err, WorkspaceError::Limit(LimitExceeded::Bytes { max: 19 })),
            "{err:?}"
        );
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "it unpacks to more than 19 bytes (FORGE_UNPACK_MAX_BYTES raises the limit)"
        );
        assert!(!dir.path().join("ws").exists(), "nothing written");
        let limits = UnpackLimits {
            max_entries: 2,
            ..UnpackLimits::DEFAULT
        };
        let (_dir, result) = unpack_with(bytes.clone(), &limits);
        assert!(
            matches!(
                result,
                Err(WorkspaceError::Limit(LimitExceeded::Entries {
                    count: 3,
                    max: 2
                }))
            ),
            "{result:?}"
        );
        let limits = UnpackLimits {
            max_bytes: 20,
            max_entries: 3,
            ..UnpackLimits::DEFAULT
        };
        let (_dir, result) = unpack_with(bytes, &limits);
        assert_eq!(result.expect("exactly at the limits").bytes, 20);
    }

    #[test]
    fn refuses_an_extreme_compression_ratio_unless_raised() {
        // issue 11: a zip of zeros expanding a thousandfold.
        let zeros = "\0".repeat(4 * 1024 * 1024);
        let bytes = archive(&[E::File("o-r-abc/zeros", &zeros, 0o644)]).into_inner();
        assert!(bytes.len() < 20_000);
        let (_dir, result) = unpack_with(bytes.clone(), &UnpackLimits::DEFAULT);
        let err = result.expect_err("a bomb");
        assert!(
            matches!(&err, WorkspaceError::Limit(LimitExceeded::Ratio { entry, max: 200, .. }) if entry == "o-r-abc/zeros"),
            "{err:?}"
        );
        assert!(err.to_string().contains("FORGE_UNPACK_MAX_RATIO"), "{err}");
        let limits = UnpackLimits {
            max_ratio: 100_000,
            ..UnpackLimits::DEFAULT
        };
        let (_dir, result) = unpack_with(bytes, &limits);
        assert_eq!(result.expect("raised").bytes, 4 * 1024 * 1024);
        // Small files are not judged by ratio.
        let small = "\0".repeat(512 * 1024);
        let (_dir, result) = unpack(&[E::File("o-r-abc/small", &small, 0o644)]);
        result.expect("a small, very compressible file");
    }

    #[test]
    fn an_entry_holding_more_than_it_declares_is_cut_off_and_refused() {
        let content = "x".repeat(5000);
        let mut bytes = archive(&[E::File("o-r-abc/liar", &content, 0o644)]).into_inner();
        // Declare 10 bytes unpacked, in the local and the central header.
        let declare = |bytes: &mut Vec<u8>, signature: &[u8], offset: usize| {
            let at = bytes
                .windows(4)
                .position(|w| w == signature)
                .expect("signature");
            bytes[at + offset..at + offset + 4].copy_from_slice(&10u32.to_le_bytes());
        };
        declare(&mut bytes, b"PK\x03\x04", 22);
        declare(&mut bytes, b"PK\x01\x02", 24);
        let (dir, result) = unpack_with(bytes, &UnpackLimits::DEFAULT);
        // zip itself stops at the declared size; forgexec counts too.
        let err = result.expect_err("a lying entry");
        assert!(
            matches!(&err, WorkspaceError::Oversized { entry, size: 10 } | WorkspaceError::EntryRead { entry, .. } if entry == "o-r-abc/liar"),
            "{err:?}"
        );
        assert!(err.is_refusal(), "{err}");
        let written = fs::metadata(dir.path().join("ws/liar")).map_or(0, |m| m.len());
        assert!(written <= 11, "{written} bytes written");
    }

    #[test]
    fn refuses_two_entries_of_one_path() {
        // Found by the fuzz target: the second link of a path used to stand
        // for the first in the checks, while the first was created.
        let (dir, result) = unpack(&[
            E::Link("o-r-abc/m", "l/../../x"),
            E::Link("o-r-abc/./l", "."),
            E::Link("o-r-abc/l", "a/b"),
        ]);
        assert!(
            matches!(&result, Err(WorkspaceError::UnsafeEntry { entry, reason }) if entry == "o-r-abc/l" && reason.contains("same path")),
            "{result:?}"
        );
        assert!(!dir.path().join("ws").exists(), "nothing written");
    }

    #[test]
    fn a_tree_that_cannot_be_written_whole_is_removed() {
        // Found by the fuzz target: `l/a` cannot be created under the file
        // `l`, after `c -> é/../..` was, and `é -> a/a`, which makes `c` safe,
        // never is: the half-written tree kept a link that leads outside as
        // soon as `é` exists.
        let (dir, result) = unpack(&[
            E::File("o-r-abc/l", "", 0o644),
            E::Link("o-r-abc/c", "é/../.."),
            E::Link("o-r-abc/l/a", "b"),
            E::Link("o-r-abc/é", "a/a"),
        ]);
        assert!(
            matches!(result, Err(WorkspaceError::Io { .. })),
            "{result:?}"
        );
        let left: Vec<_> = fs::read_dir(dir.path().join("ws"))
            .expect("ws")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
