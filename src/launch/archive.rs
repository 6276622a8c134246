//! Tar streams for the archive API: the executor archive (`/forgexec`, mode
//! 0755, and the token as `/forge/token`, mode 0400, in the same stream, so
//! the token never appears in the service spec), the working tree for local
//! mode, and unpacking of the artifacts copied back out. Every entry is
//! owned by the container's user ([`Owner`], from its `USER`), so a
//! forgexec running as a non-root user can read and delete its token and
//! write in `/forge`; Docker's own `copyUIDGID` cannot do this, because the
//! daemon resolves the user in the host's passwd database, not the image's.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::secret::Secret;

/// Where forgexec and the token land, relative to the container's `/`.
pub const FORGEXEC_PATH: &str = "forgexec";
pub const TOKEN_PATH: &str = "forge/token";
/// The workspace inside the container (forgexec's default).
pub const WORKSPACE: &str = "/forge/workspace";

/// The numeric user and group the archive's entries belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// The owner for a container's `USER` (`Config.User`: empty, `user`,
/// `user:group`, names or numbers), looking names up in the image's
/// `/etc/passwd` and `/etc/group` contents when given. A numeric user
/// without a group gets its passwd group, else 0, as Docker does.
pub fn resolve_owner(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Owner, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(Owner::ROOT);
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:x:uid:gid:...
    let passwd_entry = |want: &dyn Fn(&[&str]) -> bool| {
        passwd.and_then(|p| {
            p.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && want(f))
        })
    };
    let (uid, passwd_gid) = match user_part.parse::<u64>() {
        Ok(uid) => {
            let gid = passwd_entry(&|f| f[2] == user_part).and_then(|f| f[3].parse().ok());
            (uid, gid)
        }
        Err(_) => {
            if passwd.is_none() {
                return Err(format!(
                    "USER {user}: the image has no /etc/passwd to look up {user_part:?}; use a numeric USER"
                ));
            }
            let f = passwd_entry(&|f| f[0] == user_part).ok_or_else(|| {
                format!("USER {user}: no user {user_part:?} in the image's /etc/passwd")
            })?;
            let uid = f[2]
                .parse()
                .map_err(|_| format!("USER {user}: /etc/passwd has a bad uid {:?}", f[2]))?;
            (uid, f[3].parse().ok())
        }
    };
    let gid = match group_part {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => {
                let entry = group.and_then(|text| {
                    text.lines()
                        .map(|l| l.split(':').collect::<Vec<_>>())
                        .find(|f| f.len() >= 3 && f[0] == g)
                });
                let f = entry.ok_or_else(|| {
                    format!("USER {user}: no group {g:?} in the image's /etc/group")
                })?;
                f[2].parse()
                    .map_err(|_| format!("USER {user}: /etc/group has a bad gid {:?}", f[2]))?
            }
        },
    };
    Ok(Owner { uid, gid })
}

fn header(kind: tar::EntryType, mode: u32, size: u64, owner: Owner) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(owner.uid);
    h.set_gid(owner.gid);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    h.set_mtime(now);
    h
}

/// The executor archive, to be extracted at `/`, owned by `owner` (so
/// `/forge` is writable and the token readable and deletable by it).
pub fn executor_archive(
    forgexec: &[u8],
    token: Option<&Secret>,
    owner: Owner,
) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::with_capacity(forgexec.len() + 4096));
    let mut h = header(tar::EntryType::Regular, 0o755, forgexec.len() as u64, owner);
    tar.append_data(&mut h, FORGEXEC_PATH, forgexec)?;
    let mut h = header(tar::EntryType::Directory, 0o755, 0, owner);
    tar.append_data(&mut h, "forge/", io::empty())?;
    if let Some(token) = token {
        let bytes = token.expose().as_bytes();
        let mut h = header(tar::EntryType::Regular, 0o400, bytes.len() as u64, owner);
        tar.append_data(&mut h, TOKEN_PATH, bytes)?;
    }
    tar.into_inner()
}

/// `/forgexec` alone (mode 0755, root's): the sidecars' wrapper.
pub fn forgexec_archive(forgexec: &[u8]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::with_capacity(forgexec.len() + 1024));
    let mut h = header(
        tar::EntryType::Regular,
        0o755,
        forgexec.len() as u64,
        Owner::ROOT,
    );
    tar.append_data(&mut h, FORGEXEC_PATH, forgexec)?;
    tar.into_inner()
}

/// An archive of `files` (paths relative to `root`) under
/// `forge/workspace/`, to be extracted at `/`, owned by `owner`. Symbolic
/// links stay links.
pub fn workspace_archive(root: &Path, files: &[PathBuf], owner: Owner) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut h = header(tar::EntryType::Directory, 0o755, 0, owner);
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
        let name = Path::new("forge/workspace").join(rel);
        let mut h = tar::Header::new_gnu();
        h.set_metadata(&meta);
        h.set_uid(owner.uid);
        h.set_gid(owner.gid);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)?;
            tar.append_link(&mut h, &name, &target)?;
        } else if meta.is_file() {
            // Never blocks on a file swapped for a FIFO, and holds no more
            // than the header says.
            let (file, _) = crate::fsread::open_regular(&full, crate::fsread::Links::Refuse)
                .map_err(io::Error::other)?;
            tar.append_data(&mut h, &name, file.take(meta.len()))?;
        } else {
            // A FIFO, socket or device: git holds none, a build needs none.
            tracing::warn!("{} is not a regular file; left out", full.display());
        }
    }
    tar.into_inner()
}

/// The same archive with every entry owned by `owner` (for `git archive`
/// output, which is owned by root). Global PAX headers are dropped.
pub fn with_owner(tar_bytes: &[u8], owner: Owner) -> io::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = tar::Builder::new(Vec::with_capacity(tar_bytes.len()));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = entry.path()?.into_owned();
        let mut h = entry.header().clone();
        h.set_uid(owner.uid);
        h.set_gid(owner.gid);
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            out.append_link(&mut h, &path, &target)?;
        } else {
            out.append_data(&mut h, &path, &mut entry)?;
        }
    }
    out.into_inner()
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
        let bytes =
            executor_archive(b"\x7fELF...", Some(&Secret::new("tok")), Owner::ROOT).unwrap();
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
        let bytes = executor_archive(b"bin", None, Owner::ROOT).unwrap();
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
        let bytes = workspace_archive(src.path(), &files, Owner::ROOT).unwrap();
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
    fn the_entries_belong_to_the_owner() {
        let owner = Owner {
            uid: 1000,
            gid: 1001,
        };
        let bytes = executor_archive(b"bin", Some(&Secret::new("t")), owner).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().uid().unwrap(), 1000);
            assert_eq!(entry.header().gid().unwrap(), 1001);
        }
    }

    #[test]
    fn with_owner_rewrites_every_entry_and_keeps_contents() {
        let src = tempfile::tempdir().unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(src.path().join(&long)).unwrap();
        std::fs::write(src.path().join(&long).join("f.txt"), "F").unwrap();
        std::os::unix::fs::symlink("f.txt", src.path().join("link")).unwrap();
        let files = vec![PathBuf::from(&long).join("f.txt"), PathBuf::from("link")];
        let bytes = workspace_archive(src.path(), &files, Owner::ROOT).unwrap();
        let owner = Owner { uid: 5, gid: 6 };
        let owned = with_owner(&bytes, owner).unwrap();
        let mut archive = tar::Archive::new(&owned[..]);
        let mut paths = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().uid().unwrap(), 5);
            assert_eq!(entry.header().gid().unwrap(), 6);
            paths.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(
            paths,
            [
                "forge/workspace/".to_string(),
                format!("forge/workspace/{long}/f.txt"),
                "forge/workspace/link".to_string()
            ]
        );
        let dest = tempfile::tempdir().unwrap();
        unpack_files(&owned[..], dest.path(), 2).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.path().join(&long).join("f.txt")).unwrap(),
            "F"
        );
    }

    #[test]
    fn users_resolve_like_docker() {
        let passwd = "root:x:0:0::/root:/bin/sh\nbuilder:x:1234:1235::/home/b:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        let r = |u: &str| resolve_owner(u, Some(passwd), Some(group));
        assert_eq!(r(""), Ok(Owner::ROOT));
        assert_eq!(
            r("1000:1000"),
            Ok(Owner {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(r("1000"), Ok(Owner { uid: 1000, gid: 0 }));
        assert_eq!(
            r("1234"),
            Ok(Owner {
                uid: 1234,
                gid: 1235
            })
        );
        assert_eq!(
            r("builder"),
            Ok(Owner {
                uid: 1234,
                gid: 1235
            })
        );
        assert_eq!(r("builder:staff"), Ok(Owner { uid: 1234, gid: 50 }));
        assert_eq!(r("1000:staff"), Ok(Owner { uid: 1000, gid: 50 }));
        assert!(r("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(r("builder:wheel").unwrap_err().contains("no group"));
        assert!(resolve_owner("builder", None, None)
            .unwrap_err()
            .contains("numeric USER"));
        assert_eq!(
            resolve_owner("7:8", None, None),
            Ok(Owner { uid: 7, gid: 8 })
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
