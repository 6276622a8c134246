//! Build artifacts: what `artifacts:` in `.forge.yml` selects, zipped and
//! uploaded. [`collect`] resolves the globs ([`pattern`]) and excludes
//! against the workspace (deterministically sorted, refusing symlinks that
//! lead out of it); [`pack`] writes the zip, compressing files in parallel
//! and storing already-compressed ones as they are; [`ArtifactStore`] puts
//! the zip and the build log under [`object_prefix`] on an HTTP store
//! (WebDAV-style `PUT`) or into a `file://` directory.

mod collect;
pub mod digest;
mod pack;
pub mod pattern;
mod store;

use std::io;
use std::path::PathBuf;

pub use collect::{collect, collect_all, ArtifactFile, Collection};
pub use pack::{pack, Checksum, PackSummary};
pub use store::{object_prefix, ArtifactStore};

use crate::fsread::FsReadError;
use crate::http::HttpError;

/// Errors of collecting, packing and uploading artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid artifacts pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: pattern::PatternError,
    },
    #[error(
        "refusing artifact {link:?}: it is a symlink to {}, outside the workspace; \
         copy the file into the workspace or exclude the link",
        target.display()
    )]
    SymlinkEscape { link: String, target: PathBuf },
    #[error("refusing artifact: {0}")]
    Refused(#[source] FsReadError),
    #[error(
        "artifact {} grew from {collected} to {now} bytes while it was being packed",
        path.display()
    )]
    Grew {
        path: PathBuf,
        collected: u64,
        now: u64,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write artifact archive {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("artifact upload failed: {0}")]
    Upload(#[from] HttpError),
    #[error("invalid artifact store {base:?}: {reason}")]
    InvalidBase { base: String, reason: &'static str },
    #[error("invalid artifact object name {name:?}: {reason}")]
    InvalidObjectName { name: String, reason: &'static str },
    #[error("a packing worker thread failed: {0}")]
    Worker(String),
}
