//! The workspace: the source tree a build runs in. The forge delivers it as
//! a zipball whose entries all sit under one top folder
//! (`owner-repo-sha/`); [`unpack_zip`] extracts it with that folder
//! stripped and refuses, naming the entry, anything that could write outside
//! the destination: `..` components, absolute paths, entries outside the top
//! folder, symlinks whose target leaves the tree, and entries that would be
//! written through a symlink. Unix permission bits are kept, so scripts stay
//! executable.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::ZipArchive;

/// Unix file type bits and the symlink type, as stored in zip external
/// attributes.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;
/// Longest symlink target read from an archive.
const MAX_LINK_TARGET: u64 = 4096;

/// Errors of unpacking a source archive.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("the source archive is not a readable zip file: {source}")]
    Archive {
        #[source]
        source: ZipError,
    },
    #[error("the source archive is empty")]
    Empty,
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
        matches!(
            self,
            WorkspaceError::Empty
                | WorkspaceError::UnsafeEntry { .. }
                | WorkspaceError::NotUnderTop { .. }
                | WorkspaceError::SymlinkEscape { .. }
        )
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
}

impl<'a> LinkTree<'a> {
    fn new() -> Self {
        LinkTree {
            children: HashMap::new(),
            targets: vec![None],
        }
    }

    /// Adds the path `rel` (and its parent directories); `target` when it
    /// is a symlink.
    fn add(&mut self, rel: &'a [String], target: Option<&'a str>) {
        let mut node = 0;
        for component in rel {
            let next = self.targets.len();
            node = *self
                .children
                .entry((node, component.as_str()))
                .or_insert(next);
            if node == next {
                self.targets.push(None);
            }
        }
        if target.is_some() {
            self.targets[node] = target;
        }
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

/// Unpack a zip archive into `dest` (created if missing) with its single
/// top folder stripped. Every entry is checked before anything is written,
/// so a refused archive leaves `dest` untouched; symlinks are created last.
pub fn unpack_zip<R: Read + Seek>(reader: R, dest: &Path) -> Result<UnpackSummary, WorkspaceError> {
    let mut archive =
        ZipArchive::new(reader).map_err(|source| WorkspaceError::Archive { source })?;
    if archive.is_empty() {
        return Err(WorkspaceError::Empty);
    }

    // Pass 1: names, kinds and symlink targets, all validated.
    struct Planned {
        index: usize,
        name: String,
        rel: Vec<String>,
        kind: Kind,
        mode: Option<u32>,
    }
    enum Kind {
        Dir,
        File,
        Symlink(String),
    }
    let mut planned = Vec::with_capacity(archive.len());
    let mut top: Option<String> = None;
    for index in 0..archive.len() {
        let mut file = archive
            .by_index(index)
            .map_err(|source| WorkspaceError::Archive { source })?;
        let name = file
            .name()
            .map_err(|source| WorkspaceError::Archive { source })?
            .into_owned();
        let components = entry_components(&name).map_err(|reason| WorkspaceError::UnsafeEntry {
            entry: name.clone(),
            reason,
        })?;
        let first = components[0].to_string();
        let top = top.get_or_insert_with(|| first.clone());
        if *top != first {
            return Err(WorkspaceError::NotUnderTop {
                entry: name,
                top: top.clone(),
            });
        }
        let mode = file.unix_mode();
        let is_link = mode.is_some_and(|m| m & S_IFMT == S_IFLNK);
        let rel: Vec<&str> = components[1..].to_vec();
        if rel.is_empty() {
            if file.is_dir() && !is_link {
                continue;
            }
            return Err(WorkspaceError::NotUnderTop {
                entry: name,
                top: top.clone(),
            });
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
        planned.push(Planned {
            index,
            rel: rel.iter().map(|c| c.to_string()).collect(),
            name,
            kind,
            mode,
        });
    }
    let top = top.unwrap_or_default();
    let links: std::collections::HashSet<&[String]> = planned
        .iter()
        .filter(|p| matches!(p.kind, Kind::Symlink(_)))
        .map(|p| p.rel.as_slice())
        .collect();
    let mut tree = LinkTree::new();
    for entry in &planned {
        let target = match &entry.kind {
            Kind::Symlink(target) => Some(target.as_str()),
            _ => None,
        };
        tree.add(&entry.rel, target);
    }
    for entry in &planned {
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
    for entry in &planned {
        if (1..entry.rel.len()).any(|n| links.contains(&entry.rel[..n])) {
            return Err(WorkspaceError::UnsafeEntry {
                entry: entry.name.clone(),
                reason: "its path goes through a symlink",
            });
        }
    }

    // Pass 2: write directories and files; symlinks and directory modes last.
    fs::create_dir_all(dest).map_err(io_error(dest))?;
    let mut summary = UnpackSummary {
        top,
        ..UnpackSummary::default()
    };
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut links: Vec<(&Planned, &str)> = Vec::new();
    for entry in &planned {
        let rel: Vec<&str> = entry.rel.iter().map(String::as_str).collect();
        check_no_symlink_on_path(dest, &rel, &entry.name)?;
        let path = rel.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        match &entry.kind {
            Kind::Dir => {
                fs::create_dir_all(&path).map_err(io_error(&path))?;
                dir_modes.push((path, entry.mode.map_or(0o755, |m| m & 0o777)));
                summary.dirs += 1;
            }
            Kind::Symlink(target) => links.push((entry, target)),
            Kind::File => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_error(parent))?;
                }
                let mut file = archive
                    .by_index(entry.index)
                    .map_err(|source| WorkspaceError::Archive { source })?;
                let mut out = fs::File::create(&path).map_err(io_error(&path))?;
                let written = io::copy(&mut file, &mut out).map_err(|source| {
                    // A read error is the archive's fault; still name the file.
                    WorkspaceError::Io {
                        path: path.clone(),
                        source,
                    }
                })?;
                let mode = entry.mode.map_or(0o644, |m| m & 0o777);
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_error(&path))?;
                summary.files += 1;
                summary.bytes += written;
            }
        }
    }
    for (entry, target) in links {
        let rel: Vec<&str> = entry.rel.iter().map(String::as_str).collect();
        check_no_symlink_on_path(dest, &rel, &entry.name)?;
        let path = rel.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::os::unix::fs::symlink(target, &path).map_err(io_error(&path))?;
        summary.symlinks += 1;
    }
    for (path, mode) in dir_modes.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io_error(path))?;
    }
    Ok(summary)
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

    fn unpack(entries: &[E]) -> (tempfile::TempDir, Result<UnpackSummary, WorkspaceError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("ws");
        let result = unpack_zip(archive(entries), &dest);
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
        let result = unpack_zip(Cursor::new(b"not a zip".to_vec()), dir.path());
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
        tree.add(&paths[0], Some(".."));
        tree.add(&paths[1], Some(".."));
        tree.add(&paths[2], None);
        tree.add(&paths[3], Some("loop/x"));
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
}
