//! Tar streams for the archive API: the executor archive (`/forgexec`, mode
//! 0755, and the token as `/forge/token`, mode 0400, in the same stream, so
//! the token never appears in the service spec), the working tree for local
//! mode, and unpacking of the artifacts copied back out.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::secret::Secret;

/// Where forgexec and the token land, relative to the container's `/`.
pub const FORGEXEC_PATH: &str = "forgexec";
pub const TOKEN_PATH: &str = "forge/token";
/// The workspace inside the container (forgexec's default).
pub const WORKSPACE: &str = "/forge/workspace";

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    h.set_mtime(now);
    h
}

/// The executor archive, to be extracted at `/`.
pub fn executor_archive(forgexec: &[u8], token: Option<&Secret>) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::with_capacity(forgexec.len() + 4096));
    let mut h = header(tar::EntryType::Regular, 0o755, forgexec.len() as u64);
    tar.append_data(&mut h, FORGEXEC_PATH, forgexec)?;
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, "forge/", io::empty())?;
    if let Some(token) = token {
        let bytes = token.expose().as_bytes();
        let mut h = header(tar::EntryType::Regular, 0o400, bytes.len() as u64);
        tar.append_data(&mut h, TOKEN_PATH, bytes)?;
    }
    tar.into_inner()
}

/// An archive of `files` (paths relative to `root`) under
/// `forge/workspace/`, to be extracted at `/`. Symbolic links stay links.
pub fn workspace_archive(root: &Path, files: &[PathBuf]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, "forge/workspace/", io::empty())?;
    for rel in files {
        let full = root.join(rel);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            // listed by git but deleted in the working tree
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            continue;
        }
        tar.append_path_with_name(&full, Path::new("forge/workspace").join(rel))?;
    }
    tar.into_inner()
}

/// Unpacks the files of a tar stream (as returned by the archive API for a
/// directory) into `dest`, dropping the first `strip` path components.
/// Entries that would escape `dest` are refused. Returns the files written.
pub fn unpack_files(tar_bytes: impl Read, dest: &Path, strip: usize) -> io::Result<Vec<PathBuf>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut written = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.into_owned();
        let mut rel = PathBuf::new();
        for (i, comp) in path.components().enumerate() {
            match comp {
                Component::Normal(part) if i >= strip => rel.push(part),
                Component::Normal(_) | Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("refusing archive entry {}", path.display()),
                    ))
                }
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&target)?;
        io::copy(&mut entry, &mut out)?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_archive_has_forgexec_and_token_with_their_modes() {
        let bytes = executor_archive(b"\x7fELF...", Some(&Secret::new("tok"))).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap_or_default();
            seen.push((path, mode, body));
        }
        assert_eq!(seen[0].0, "forgexec");
        assert_eq!(seen[0].1, 0o755);
        assert_eq!(seen[1].0, "forge/");
        assert_eq!(
            seen[2],
            ("forge/token".to_string(), 0o400, "tok".to_string())
        );
    }

    #[test]
    fn executor_archive_without_token_has_no_token_entry() {
        let bytes = executor_archive(b"bin", None).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(paths, ["forgexec", "forge/"]);
    }

    #[test]
    fn workspace_archive_round_trips_through_unpack() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("a.txt"), "A").unwrap();
        std::fs::write(src.path().join("sub/b.txt"), "B").unwrap();
        let files = vec![
            PathBuf::from("a.txt"),
            PathBuf::from("sub/b.txt"),
            PathBuf::from("deleted.txt"),
        ];
        let bytes = workspace_archive(src.path(), &files).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let written = unpack_files(&bytes[..], dest.path(), 2).unwrap();
        assert_eq!(
            written,
            [PathBuf::from("a.txt"), PathBuf::from("sub/b.txt")]
        );
        assert_eq!(
            std::fs::read_to_string(dest.path().join("sub/b.txt")).unwrap(),
            "B"
        );
    }

    #[test]
    fn unpack_refuses_escaping_entries() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        // bypass the builder's own path check by writing the name directly
        let name = b"x/../../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        tar.append(&h, &b"e"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(unpack_files(&bytes[..], dest.path(), 0).is_err());
    }
}
