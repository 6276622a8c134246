//! Where artifacts and logs go: an HTTP store taking `PUT` (nginx WebDAV,
//! S3-compatible gateways, Artifactory) or a local directory (`file://`).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::digest::{sha256_file, Sha256Digest};
use super::ArtifactError;
use crate::http::{HttpClient, HttpError};

/// A destination for build outputs.
#[derive(Debug, Clone)]
pub enum ArtifactStore {
    /// `PUT {base}/{object}` over HTTP(S).
    Http { base: String, http: HttpClient },
    /// Files under a local directory.
    Dir { root: PathBuf },
}

/// `{owner}/{repo}/{sha}/{action}/{build_id}`, each segment made path-safe:
/// characters other than ASCII letters, digits, `-`, `_` and `.` are
/// percent-encoded, an empty segment becomes `_` and a dots-only segment
/// (`.`, `..`) gets a `_` prefix, so no segment can climb out of the prefix.
pub fn object_prefix(owner: &str, repo: &str, sha: &str, action: &str, build_id: &str) -> String {
    [owner, repo, sha, action, build_id]
        .iter()
        .map(|segment| safe_segment(segment))
        .collect::<Vec<_>>()
        .join("/")
}

fn safe_segment(segment: &str) -> String {
    if segment.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.bytes().all(|b| b == b'.') {
        out.insert(0, '_');
    }
    out
}

/// Check an object name: `/`-separated, non-empty segments, no `.`/`..`,
/// no backslash or control characters.
fn check_object_name(name: &str) -> Result<(), ArtifactError> {
    let invalid = |reason| ArtifactError::InvalidObjectName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.starts_with('/') {
        return Err(invalid("it must be relative to the store"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '?' || c == '#')
    {
        return Err(invalid("it contains a control character, `\\`, `?` or `#`"));
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid("it has an empty, `.` or `..` segment"));
        }
    }
    Ok(())
}

/// The `Content-Type` of an object by its extension.
fn content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("zip") => "application/zip",
        Some("log" | "txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

impl ArtifactStore {
    /// A store from `FORGE_ARTIFACTS_URL`-style base: `http://` or
    /// `https://` (uploads with `PUT`), or `file:///absolute/dir`.
    pub fn from_base(base: &str, http: HttpClient) -> Result<ArtifactStore, ArtifactError> {
        let invalid = |reason| ArtifactError::InvalidBase {
            base: crate::http::redact_url(base),
            reason,
        };
        if let Some(path) = base.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file:// base needs an absolute path (file:///srv/artifacts)",
                ));
            }
            return Ok(ArtifactStore::Dir {
                root: PathBuf::from(path),
            });
        }
        let lower = base.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            if base.contains(['?', '#']) {
                return Err(invalid("the base URL must not have a query or fragment"));
            }
            return Ok(ArtifactStore::Http {
                base: base.trim_end_matches('/').to_string(),
                http,
            });
        }
        Err(invalid("it must start with http://, https:// or file://"))
    }

    /// Whether uploads send `X-Checksum-Sha256` (HTTP stores do).
    pub fn sends_checksums(&self) -> bool {
        matches!(self, ArtifactStore::Http { .. })
    }

    /// Store the file at `path` as `object_name`; returns the object's URL
    /// (HTTP) or path (directory). HTTP uploads send `Content-Length`,
    /// `Content-Type` and `X-Checksum-Sha256`, stream the body from the file
    /// (reopened for each attempt) and are retried per the client's policy;
    /// any 2xx is success.
    pub fn put_file(&self, object_name: &str, path: &Path) -> Result<String, ArtifactError> {
        self.put_file_with_digest(object_name, path, None)
    }

    /// [`ArtifactStore::put_file`] for a file whose SHA-256 is known already
    /// (the artifact zip, hashed while it was packed); `None` reads the file
    /// to compute it when the store needs it.
    pub fn put_file_with_digest(
        &self,
        object_name: &str,
        path: &Path,
        sha256: Option<Sha256Digest>,
    ) -> Result<String, ArtifactError> {
        check_object_name(object_name)?;
        match self {
            ArtifactStore::Http { base, http } => {
                let url = format!("{base}/{object_name}");
                let digest = match sha256 {
                    Some(digest) => digest,
                    None => sha256_file(path).map_err(|source| ArtifactError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?,
                };
                let checksum = hex::encode(digest);
                let content_type = content_type(object_name);
                http.retry("PUT", &url, |agent, left| {
                    let file = File::open(path).map_err(|source| HttpError::LocalIo {
                        what: "cannot read upload",
                        path: path.to_path_buf(),
                        source,
                    })?;
                    let request = agent
                        .put(&url)
                        .header("Content-Type", content_type)
                        .header("X-Checksum-Sha256", checksum.as_str());
                    let response = crate::http::within(request, left)
                        .send(file)
                        .map_err(|e| HttpError::from_ureq("PUT", &url, e))?;
                    let response = crate::http::check_status("PUT", &url, response)?;
                    if !response.status().is_success() {
                        return Err(HttpError::Status {
                            method: "PUT".into(),
                            url: crate::http::redact_url(&url),
                            code: response.status().as_u16(),
                            message: "unexpected answer to an upload (expected 2xx)".into(),
                            retry_after: None,
                            rate_limited: false,
                        });
                    }
                    Ok(())
                })?;
                tracing::debug!(
                    "uploaded {} to {}",
                    path.display(),
                    crate::http::redact_url(&url)
                );
                Ok(url)
            }
            ArtifactStore::Dir { root } => {
                let dest = object_name.split('/').fold(root.clone(), |p, s| p.join(s));
                let parent = dest.parent().unwrap_or(root);
                let write_error = |source| ArtifactError::Write {
                    path: dest.clone(),
                    source,
                };
                fs::create_dir_all(parent).map_err(write_error)?;
                let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(write_error)?;
                let mut input = File::open(path).map_err(|source| ArtifactError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                io::copy(&mut input, temp.as_file_mut()).map_err(write_error)?;
                temp.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))
                    .map_err(write_error)?;
                // On disk before it takes its name: a crash leaves no
                // truncated object behind.
                temp.as_file().sync_all().map_err(write_error)?;
                temp.persist(&dest).map_err(|e| write_error(e.error))?;
                Ok(dest.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_path_safe() {
        assert_eq!(
            object_prefix("octo", "hello-world", "0123abc", "execute", "b-17"),
            "octo/hello-world/0123abc/execute/b-17"
        );
        assert_eq!(
            object_prefix("o", "r", "s", "feat/x y", ".."),
            "o/r/s/feat%2Fx%20y/_.."
        );
        assert_eq!(
            object_prefix("", "r.js", "s", "é", "."),
            "_/r.js/s/%C3%A9/_."
        );
    }

    #[test]
    fn object_names_are_checked() {
        assert!(check_object_name("o/r/s/a/b/artifacts.zip").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "a\\b", "a?x", "a\nb"] {
            assert!(
                matches!(
                    check_object_name(bad),
                    Err(ArtifactError::InvalidObjectName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bases_are_checked() {
        let http = HttpClient::new(None).expect("client");
        assert!(matches!(
            ArtifactStore::from_base("https://store.example/artifacts/", http.clone()),
            Ok(ArtifactStore::Http { base, .. }) if base == "https://store.example/artifacts"
        ));
        assert!(matches!(
            ArtifactStore::from_base("file:///srv/a", http.clone()),
            Ok(ArtifactStore::Dir { root }) if root == Path::new("/srv/a")
        ));
        for bad in [
            "ftp://x",
            "file://relative",
            "/plain/path",
            "https://x/?sig=1",
        ] {
            assert!(
                matches!(
                    ArtifactStore::from_base(bad, http.clone()),
                    Err(ArtifactError::InvalidBase { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/artifacts.zip"), "application/zip");
        assert_eq!(content_type("a/build.log"), "text/plain; charset=utf-8");
        assert_eq!(content_type("a/blob"), "application/octet-stream");
    }

    #[test]
    fn file_store_writes_nested_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("build.log");
        fs::write(&source, "log line\n").expect("write");
        let base = format!("file://{}", dir.path().join("store").display());
        let store =
            ArtifactStore::from_base(&base, HttpClient::new(None).expect("client")).expect("store");
        let dest = store
            .put_file("o/r/s/execute/1/build.log", &source)
            .expect("put");
        assert_eq!(
            dest,
            dir.path()
                .join("store/o/r/s/execute/1/build.log")
                .display()
                .to_string()
        );
        assert_eq!(fs::read_to_string(&dest).expect("read"), "log line\n");
        // Overwrites are fine (a retried build).
        fs::write(&source, "second\n").expect("write");
        store
            .put_file("o/r/s/execute/1/build.log", &source)
            .expect("put again");
        assert_eq!(fs::read_to_string(&dest).expect("read"), "second\n");
    }
}
