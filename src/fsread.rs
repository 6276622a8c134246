//! Reading a file whose path a pull request or an operator controls
//! (`.forge.yml`, the token file, `FORGE_CA_CERT`, artifacts): such a path
//! may name a FIFO, a terminal or `/dev/zero` as easily as a file. It is
//! opened without blocking (`O_NONBLOCK`, `O_NOCTTY`), judged by `fstat` on
//! the open descriptor, and refused unless it is a regular file; reads stop
//! at a size cap. Symlinks are followed or refused, as the caller says. A
//! regular file never blocks a read, so no read here can hold up
//! cancellation.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Whether the last component of the path may be a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Follow,
    /// `O_NOFOLLOW`: a symlink is refused, not read through.
    Refuse,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FsReadError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a symbolic link, which is refused here", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file (it is a {kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is too large ({size} bytes; at most {max} bytes are read)", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{} leads to {}, outside {}", path.display(), real.display(), root.display())]
    Outside {
        path: PathBuf,
        real: PathBuf,
        root: PathBuf,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsReadError {
    /// The file is refused for what it is (a link, a device, too large,
    /// outside), as opposed to an I/O failure or a missing file.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            FsReadError::Symlink { .. }
                | FsReadError::NotRegular { .. }
                | FsReadError::TooLarge { .. }
                | FsReadError::Outside { .. }
        )
    }

    /// The I/O error underneath, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            FsReadError::Open { source, .. } | FsReadError::Read { source, .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }
}

/// What a non-regular file is, for messages.
fn kind_of(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "named pipe (FIFO)"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a regular file; returns it and its
/// size. Nothing else is opened for long: a FIFO or device is judged by a
/// non-blocking open and `fstat`, then closed.
pub fn open_regular(path: &Path, links: Links) -> Result<(File, u64), FsReadError> {
    let open_error = |source| FsReadError::Open {
        path: path.to_path_buf(),
        source,
    };
    // Judge by the path first, so that a device is not even opened when it
    // is there from the start; the `fstat` below decides.
    let meta = match links {
        Links::Follow => std::fs::metadata(path),
        Links::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(open_error)?;
    check_type(path, meta.file_type())?;
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            // Swapped for a link since the check above.
            Some(libc::ELOOP) if links == Links::Refuse => FsReadError::Symlink {
                path: path.to_path_buf(),
            },
            _ => open_error(source),
        })?;
    let meta = file.metadata().map_err(|source| FsReadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_type(path, meta.file_type())?;
    Ok((file, meta.len()))
}

fn check_type(path: &Path, file_type: FileType) -> Result<(), FsReadError> {
    if file_type.is_file() {
        Ok(())
    } else if file_type.is_symlink() {
        Err(FsReadError::Symlink {
            path: path.to_path_buf(),
        })
    } else {
        Err(FsReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(file_type),
        })
    }
}

/// The content of the regular file at `path`, at most `max` bytes (a
/// larger file is refused, and never read whole).
pub fn read_regular(path: &Path, links: Links, max: u64) -> Result<Vec<u8>, FsReadError> {
    let (file, size) = open_regular(path, links)?;
    let too_large = |size| FsReadError::TooLarge {
        path: path.to_path_buf(),
        size,
        max,
    };
    if size > max {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the cap tells a file that grew from one that fits.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FsReadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Like [`read_regular`], for a file that must lie inside `root` once every
/// symlink on its path is resolved (a link inside the tree is fine; one
/// leading out of it is refused). The resolved path is opened without
/// following links, so it cannot be swapped for one in between.
pub fn read_regular_within(root: &Path, path: &Path, max: u64) -> Result<Vec<u8>, FsReadError> {
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| FsReadError::Open {
            path: p.to_path_buf(),
            source,
        })
    };
    let root_real = canonical(root)?;
    let real = canonical(path)?;
    if !real.starts_with(&root_real) {
        return Err(FsReadError::Outside {
            path: path.to_path_buf(),
            real,
            root: root.to_path_buf(),
        });
    }
    read_regular(&real, Links::Refuse, max).map_err(|err| match err {
        // Name the file as the caller did.
        FsReadError::NotRegular { kind, .. } => FsReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    #[test]
    fn reads_a_regular_file_and_follows_links_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "content").unwrap();
        symlink(&file, dir.path().join("link")).unwrap();
        assert_eq!(read_regular(&file, Links::Refuse, 100).unwrap(), b"content");
        assert_eq!(
            read_regular(&dir.path().join("link"), Links::Follow, 100).unwrap(),
            b"content"
        );
        let err = read_regular(&dir.path().join("link"), Links::Refuse, 100).unwrap_err();
        assert!(matches!(err, FsReadError::Symlink { .. }), "{err}");
        assert!(err.is_refusal());
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe");
        fifo(&pipe);
        symlink(&pipe, dir.path().join("to-pipe")).unwrap();
        let started = Instant::now();
        for (path, kind) in [
            (pipe.as_path(), "named pipe (FIFO)"),
            (&dir.path().join("to-pipe"), "named pipe (FIFO)"),
            (Path::new("/dev/zero"), "character device"),
            (Path::new("/dev/ptmx"), "character device"),
            (dir.path(), "directory"),
        ] {
            let err = read_regular(path, Links::Follow, 100).unwrap_err();
            assert!(
                matches!(&err, FsReadError::NotRegular { kind: k, .. } if *k == kind),
                "{}: {err}",
                path.display()
            );
            assert!(err.to_string().contains(&path.display().to_string()));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_file_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, vec![b'x'; 101]).unwrap();
        let err = read_regular(&file, Links::Refuse, 100).unwrap_err();
        assert!(
            matches!(
                err,
                FsReadError::TooLarge {
                    size: 101,
                    max: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(read_regular(&file, Links::Refuse, 101).unwrap().len(), 101);
    }

    #[test]
    fn within_refuses_what_leads_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/real.yml"), "a").unwrap();
        std::fs::write(dir.path().join("outside.yml"), "b").unwrap();
        symlink("sub/real.yml", root.join("inside")).unwrap();
        symlink("../outside.yml", root.join("out")).unwrap();
        assert_eq!(
            read_regular_within(&root, &root.join("inside"), 10).unwrap(),
            b"a"
        );
        let err = read_regular_within(&root, &root.join("out"), 10).unwrap_err();
        assert!(matches!(err, FsReadError::Outside { .. }), "{err}");
        let err = read_regular_within(&root, &root.join("missing"), 10).unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(!err.is_refusal());
    }
}
