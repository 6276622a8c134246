//! Resolving `artifacts: { paths, exclude }` against the workspace.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::WalkDir;

use super::pattern::GlobSet;
use super::ArtifactError;
use crate::spec::Artifacts;

/// One file to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Name in the archive: the path relative to the workspace, `/`-separated.
    pub name: String,
    /// Where to read the content (the target for a symlink in the workspace).
    pub source: PathBuf,
    pub size: u64,
    /// Unix permission bits (`0o755` for executables).
    pub mode: u32,
    pub modified: Option<SystemTime>,
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, ArtifactError> {
    let mut set = GlobSet::new();
    for pattern in patterns {
        let normalized = pattern.trim_start_matches("./").trim_end_matches('/');
        set.add(normalized)
            .map_err(|source| ArtifactError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
    }
    Ok(set)
}

/// Whether `rel` or one of its parent directories matches: a glob naming a
/// directory selects everything below it.
fn matches_self_or_parent(set: &GlobSet, rel: &str) -> bool {
    if set.is_match(rel) {
        return true;
    }
    let mut end = rel.len();
    while let Some(slash) = rel[..end].rfind('/') {
        if set.is_match(&rel[..slash]) {
            return true;
        }
        end = slash;
    }
    false
}

struct Walk {
    root: PathBuf,
    paths: GlobSet,
    exclude: GlobSet,
    files: Vec<ArtifactFile>,
    refused: Vec<ArtifactError>,
}

impl Walk {
    /// Walk `real_dir`, whose entries are named `prefix/...` in the archive.
    /// `ancestors` are the real directories being walked, to stop symlink
    /// loops.
    fn walk(
        &mut self,
        real_dir: &Path,
        prefix: &str,
        ancestors: &mut Vec<PathBuf>,
    ) -> Result<(), ArtifactError> {
        let mut entries = WalkDir::new(real_dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(real_dir).to_path_buf();
                ArtifactError::Read {
                    path,
                    source: e.into(),
                }
            })?;
            let Ok(relative) = entry.path().strip_prefix(real_dir) else {
                continue;
            };
            let relative = relative.to_string_lossy();
            let rel = if prefix.is_empty() {
                relative.into_owned()
            } else {
                format!("{prefix}/{relative}")
            };
            let file_type = entry.file_type();
            if matches_self_or_parent(&self.exclude, &rel) {
                if file_type.is_dir() {
                    entries.skip_current_dir();
                }
                continue;
            }
            if file_type.is_dir() {
                continue;
            }
            let included = matches_self_or_parent(&self.paths, &rel);
            if file_type.is_symlink() {
                self.symlink(entry.path(), &rel, included, ancestors)?;
                continue;
            }
            if included && file_type.is_file() {
                let meta = entry.metadata().map_err(|e| ArtifactError::Read {
                    path: entry.path().to_path_buf(),
                    source: e.into(),
                })?;
                self.push(rel, entry.path().to_path_buf(), &meta);
            }
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        link: &Path,
        rel: &str,
        included: bool,
        ancestors: &mut Vec<PathBuf>,
    ) -> Result<(), ArtifactError> {
        let Ok(real) = fs::canonicalize(link) else {
            if included {
                tracing::warn!("artifact {rel:?} is a dangling symlink; skipped");
            }
            return Ok(());
        };
        if !real.starts_with(&self.root) {
            if included {
                self.refused.push(ArtifactError::SymlinkEscape {
                    link: rel.to_string(),
                    target: real,
                });
            }
            // Not selected itself; what lies outside is never walked.
            return Ok(());
        }
        let meta = fs::metadata(&real).map_err(|source| ArtifactError::Read {
            path: real.clone(),
            source,
        })?;
        if meta.is_file() {
            if included {
                self.push(rel.to_string(), real, &meta);
            }
        } else if meta.is_dir() {
            // A target containing the link, or already being walked, loops.
            let contains_link = link
                .parent()
                .and_then(|parent| fs::canonicalize(parent).ok())
                .is_some_and(|parent| parent.starts_with(&real));
            if contains_link || ancestors.iter().any(|a| a == &real) {
                tracing::warn!("artifact directory {rel:?} is a symlink loop; skipped");
                return Ok(());
            }
            ancestors.push(real.clone());
            let result = self.walk(&real, rel, ancestors);
            ancestors.pop();
            result?;
        }
        Ok(())
    }

    fn push(&mut self, name: String, source: PathBuf, meta: &fs::Metadata) {
        self.files.push(ArtifactFile {
            name,
            source,
            size: meta.len(),
            mode: meta.permissions().mode() & 0o777,
            modified: meta.modified().ok(),
        });
    }
}

/// The files `spec` selects in `workspace`, sorted by archive name. A glob
/// matching a directory selects its contents; excludes remove files and
/// whole directories. Symlinks within the workspace are followed (packed as
/// the file they point to); a selected symlink leading outside the
/// workspace is an error naming it, and dangling ones are skipped with a
/// warning.
fn collect_inner(workspace: &Path, spec: &Artifacts) -> Result<Collection, ArtifactError> {
    if spec.paths.is_empty() {
        return Ok(Collection::default());
    }
    let root = fs::canonicalize(workspace).map_err(|source| ArtifactError::Read {
        path: workspace.to_path_buf(),
        source,
    })?;
    let mut walk = Walk {
        paths: glob_set(&spec.paths)?,
        exclude: glob_set(&spec.exclude)?,
        root: root.clone(),
        files: Vec::new(),
        refused: Vec::new(),
    };
    walk.walk(&root, "", &mut vec![root.clone()])?;
    let mut files = std::mem::take(&mut walk.files);
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files.dedup_by(|a, b| a.name == b.name);
    Ok(Collection {
        files,
        refused: walk.refused,
    })
}

/// What [`collect_all`] found: the files to pack, and the selected entries
/// it refused (symlinks leading outside the workspace), which a build
/// reports while still packing the rest.
#[derive(Debug, Default)]
pub struct Collection {
    pub files: Vec<ArtifactFile>,
    pub refused: Vec<ArtifactError>,
}

/// Like [`collect`], but an escaping symlink is reported in
/// [`Collection::refused`] instead of failing the whole collection.
pub fn collect_all(workspace: &Path, spec: &Artifacts) -> Result<Collection, ArtifactError> {
    collect_inner(workspace, spec)
}

/// The files `spec` selects; any refused entry is an error.
pub fn collect(workspace: &Path, spec: &Artifacts) -> Result<Vec<ArtifactFile>, ArtifactError> {
    let collection = collect_inner(workspace, spec)?;
    match collection.refused.into_iter().next() {
        Some(refused) => Err(refused),
        None => Ok(collection.files),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::When;
    use std::os::unix::fs::symlink;

    fn spec(paths: &[&str], exclude: &[&str]) -> Artifacts {
        Artifacts {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            when: When::Always,
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, content) in [
            ("dist/app.bin", "bin"),
            ("dist/app.map", "map"),
            ("dist/sub/lib.so", "so"),
            ("dist/sub/tmp/cache", "c"),
            ("reports/junit.xml", "<x/>"),
            ("reports/coverage/index.html", "<html/>"),
            ("src/main.rs", "fn main() {}"),
            ("notes.txt", "n"),
        ] {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }
        dir
    }

    fn names(files: &[ArtifactFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn directories_select_their_contents_and_excludes_apply() {
        let dir = tree();
        let files = collect(
            dir.path(),
            &spec(&["dist", "reports/*.xml"], &["**/*.map", "dist/sub/tmp"]),
        )
        .expect("collect");
        assert_eq!(
            names(&files),
            ["dist/app.bin", "dist/sub/lib.so", "reports/junit.xml"]
        );
        assert_eq!(files[0].size, 3);
    }

    #[test]
    fn single_star_does_not_cross_directories() {
        let dir = tree();
        let files = collect(dir.path(), &spec(&["reports/*"], &[])).expect("collect");
        // `reports/coverage` matches `reports/*` as a directory: its contents come along.
        assert_eq!(
            names(&files),
            ["reports/coverage/index.html", "reports/junit.xml"]
        );
        let files = collect(dir.path(), &spec(&["*.txt"], &[])).expect("collect");
        assert_eq!(names(&files), ["notes.txt"]);
        let files = collect(dir.path(), &spec(&["**/*.so", "./notes.txt"], &[])).expect("collect");
        assert_eq!(names(&files), ["dist/sub/lib.so", "notes.txt"]);
    }

    #[test]
    fn nothing_selected_is_empty() {
        let dir = tree();
        assert!(collect(dir.path(), &spec(&[], &[]))
            .expect("collect")
            .is_empty());
        assert!(collect(dir.path(), &spec(&["nope/**"], &[]))
            .expect("collect")
            .is_empty());
    }

    #[test]
    fn symlinks_inside_are_followed_as_files() {
        let dir = tree();
        symlink("app.bin", dir.path().join("dist/latest")).expect("link");
        symlink("../reports", dir.path().join("dist/reports")).expect("dir link");
        symlink(".", dir.path().join("dist/loop")).expect("loop link");
        let files =
            collect(dir.path(), &spec(&["dist"], &["**/*.map", "dist/sub"])).expect("collect");
        assert_eq!(
            names(&files),
            [
                "dist/app.bin",
                "dist/latest",
                "dist/reports/coverage/index.html",
                "dist/reports/junit.xml"
            ]
        );
        // Mutual links terminate too.
        fs::create_dir_all(dir.path().join("x")).expect("mkdir");
        fs::create_dir_all(dir.path().join("y")).expect("mkdir");
        symlink("../y", dir.path().join("x/to_y")).expect("link");
        symlink("../x", dir.path().join("y/to_x")).expect("link");
        fs::write(dir.path().join("y/f"), "f").expect("write");
        let looped = collect(dir.path(), &spec(&["x"], &[])).expect("collect loops");
        assert_eq!(names(&looped), ["x/to_y/f"]);
        let latest = &files[1];
        assert_eq!(latest.size, 3);
        assert!(
            latest.source.ends_with("dist/app.bin"),
            "{:?}",
            latest.source
        );
    }

    #[test]
    fn symlinks_leaving_the_workspace_are_refused() {
        let outside = tempfile::tempdir().expect("outside");
        fs::write(outside.path().join("secret"), "s").expect("write");
        let dir = tree();
        symlink(outside.path().join("secret"), dir.path().join("dist/creds")).expect("link");
        let error = collect(dir.path(), &spec(&["dist"], &[])).expect_err("escape");
        match &error {
            ArtifactError::SymlinkEscape { link, .. } => assert_eq!(link, "dist/creds"),
            other => panic!("expected SymlinkEscape, got {other:?}"),
        }
        assert!(error.to_string().contains("dist/creds"));
        // Not selected: no error, and nothing outside is walked.
        let files = collect(dir.path(), &spec(&["reports"], &[])).expect("unselected link");
        assert_eq!(files.len(), 2);
        // Excluded: fine too.
        collect(dir.path(), &spec(&["dist"], &["dist/creds"])).expect("excluded link");
    }

    #[test]
    fn modes_are_kept() {
        let dir = tree();
        fs::set_permissions(
            dir.path().join("dist/app.bin"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let files = collect(dir.path(), &spec(&["dist/app.bin"], &[])).expect("collect");
        assert_eq!(files[0].mode, 0o755);
    }

    #[test]
    fn bad_patterns_are_named() {
        let dir = tree();
        let error = collect(dir.path(), &spec(&["dist/[a"], &[])).expect_err("bad glob");
        assert!(
            matches!(&error, ArtifactError::Pattern { pattern, .. } if pattern == "dist/[a"),
            "{error}"
        );
    }
}
