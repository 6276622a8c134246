//! The git facts a local build needs, read with the `git` CLI (it is on every
//! developer machine; the container never needs it): the repository's top
//! folder, commits, the `origin` URL and what it says about owner and
//! repository, the hooks folder, and clean temporary checkouts of a commit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables git exports to hooks and that would point a git command (ours
/// or a build command's) at the wrong repository; never passed on.
pub const GIT_REPO_VARS: [&str; 9] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_PREFIX",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_NAMESPACE",
];

/// A git command that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}\n  help: install git and make sure it is on PATH")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` in {} failed: {stderr}", dir.display())]
    Failed {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
    #[error("{} is not inside a git repository\n  help: run forgexec in a clone, or pass --dir", dir.display())]
    NotARepository { dir: PathBuf },
    #[error("`{rev}` is not a commit of the repository in {}", dir.display())]
    NoSuchCommit { rev: String, dir: PathBuf },
    #[error("cannot create a temporary checkout: {0}")]
    Temp(#[source] std::io::Error),
}

/// The git CLI pointed at one folder.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
}

impl Git {
    pub fn new(dir: &Path) -> Self {
        Git {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `git -C DIR ARGS` without the variables git exports to hooks.
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.dir).args(args);
        for var in GIT_REPO_VARS {
            cmd.env_remove(var);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs git and returns its stdout as it is (archives, `-z` lists).
    pub fn output_bytes(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let out = self.command(args).output().map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                dir: self.dir.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// Runs git and returns its trimmed stdout.
    pub fn output(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.output_bytes(args)?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// The top folder of the work tree.
    pub fn toplevel(&self) -> Result<PathBuf, GitError> {
        match self.output(&["rev-parse", "--show-toplevel"]) {
            Ok(top) if !top.is_empty() => Ok(PathBuf::from(top)),
            Ok(_) | Err(GitError::Failed { .. }) => Err(GitError::NotARepository {
                dir: self.dir.clone(),
            }),
            Err(other) => Err(other),
        }
    }

    /// The full id of the commit `rev` names (`HEAD`, a branch, a short id).
    pub fn commit(&self, rev: &str) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        match self.output(&["rev-parse", "--verify", "--quiet", &spec]) {
            Ok(sha) if !sha.is_empty() => Ok(sha),
            Ok(_) | Err(GitError::Failed { .. }) => Err(GitError::NoSuchCommit {
                rev: rev.to_string(),
                dir: self.dir.clone(),
            }),
            Err(other) => Err(other),
        }
    }

    /// The URL of a remote, if it has one.
    pub fn remote_url(&self, remote: &str) -> Option<String> {
        self.output(&["config", "--get", &format!("remote.{remote}.url")])
            .ok()
            .filter(|url| !url.is_empty())
    }

    /// Resolves a path git knows relative to this folder (`--git-path`,
    /// `--git-common-dir`) to an absolute one.
    fn absolute(&self, path: String) -> PathBuf {
        let path = PathBuf::from(path);
        let path = if path.is_absolute() {
            path
        } else {
            self.dir.join(path)
        };
        // `.git` under a relative `--dir` must work from any folder.
        match path.canonicalize() {
            Ok(absolute) => absolute,
            Err(_) => std::path::absolute(&path).unwrap_or(path),
        }
    }

    /// Where git looks for hooks: `core.hooksPath` when set, otherwise the
    /// `hooks` folder of the repository (shared by all its worktrees).
    pub fn hooks_dir(&self) -> Result<PathBuf, GitError> {
        let path = self.output(&["rev-parse", "--git-path", "hooks"])?;
        Ok(self.absolute(path))
    }

    /// The repository's git folder shared by all worktrees.
    pub fn common_dir(&self) -> Result<PathBuf, GitError> {
        let path = self.output(&["rev-parse", "--git-common-dir"])?;
        Ok(self.absolute(path))
    }
}

/// Owner and repository named by a remote URL in its common forms:
/// `https://host/OWNER/REPO(.git)`, `ssh://[user@]host[:port]/OWNER/REPO.git`,
/// `git://host/OWNER/REPO`, and scp-like `[user@]host:OWNER/REPO.git`. The
/// last two path segments are taken (GitLab subgroups, Enterprise prefixes).
/// Local paths and `file://` URLs name no owner: `None`.
pub fn parse_remote_url(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let path = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if !matches!(
                scheme.as_str(),
                "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git"
            ) {
                return None;
            }
            let (_authority, path) = rest.split_once('/')?;
            path
        }
        None => {
            // scp-like: a host before the first `:`, with no `/` in it.
            let (host, path) = url.split_once(':')?;
            if host.is_empty() || host.contains('/') {
                return None;
            }
            path
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut segments = path.rsplit('/').filter(|s| !s.is_empty());
    let repo = segments.next()?;
    let owner = segments.next()?.trim_start_matches('~');
    let valid = crate::facts::RepoName::is_valid;
    (valid(owner) && valid(repo)).then(|| (owner.to_string(), repo.to_string()))
}

/// A fresh checkout of one commit in a temporary folder, made with
/// `git clone --shared` (no objects are copied, the repository and its work
/// tree are not touched). The folder is removed when this is dropped, which
/// happens on every way out of a build, including failure and Ctrl-C (the
/// build's cancellation catches the signal and returns normally).
#[derive(Debug)]
pub struct CleanCheckout {
    temp: Option<tempfile::TempDir>,
    tree: PathBuf,
}

impl CleanCheckout {
    pub fn create(git: &Git, sha: &str) -> Result<Self, GitError> {
        let sha = git.commit(sha)?;
        let sha = sha.as_str();
        let common = git.common_dir()?;
        let temp = tempfile::Builder::new()
            .prefix("forgexec-clean-")
            .tempdir()
            .map_err(GitError::Temp)?;
        let tree = temp.path().join("src");
        let mut checkout = CleanCheckout {
            temp: Some(temp),
            tree,
        };
        let parent = Git::new(&checkout.temp_path());
        let common_text = common.to_string_lossy().into_owned();
        let tree_text = checkout.tree.to_string_lossy().into_owned();
        parent.output(&[
            "clone",
            "--quiet",
            "--shared",
            "--no-checkout",
            &common_text,
            &tree_text,
        ])?;
        let clone = Git::new(&checkout.tree);
        clone.output(&["checkout", "--quiet", "--detach", sha])?;
        // Build commands asking for `origin` see the real one.
        if let Some(url) = git.remote_url("origin") {
            let _ = clone.output(&["remote", "set-url", "origin", &url]);
        }
        checkout.tree = checkout
            .tree
            .canonicalize()
            .unwrap_or_else(|_| checkout.tree.clone());
        Ok(checkout)
    }

    /// The checked-out tree.
    pub fn path(&self) -> &Path {
        &self.tree
    }

    fn temp_path(&self) -> PathBuf {
        self.temp
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default()
    }
}

impl Drop for CleanCheckout {
    fn drop(&mut self) {
        let Some(temp) = self.temp.take() else {
            return;
        };
        let root = temp.path().to_path_buf();
        if temp.close().is_ok() {
            return;
        }
        // Builds may leave read-only folders (Go's module cache): make
        // everything writable and try again.
        use std::os::unix::fs::PermissionsExt;
        for entry in walkdir::WalkDir::new(&root).into_iter().flatten() {
            if entry.file_type().is_dir() {
                let _ =
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&root) {
            if root.exists() {
                crate::render::Renderer::default().report(
                    &format!(
                        "forgexec: cannot remove the temporary checkout {}",
                        root.display()
                    ),
                    &err,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(owner: &str, repo: &str) -> Option<(String, String)> {
        Some((owner.to_string(), repo.to_string()))
    }

    #[test]
    fn origin_urls_in_every_common_form() {
        for url in [
            "https://github.com/octo-org/hello-world.git",
            "https://github.com/octo-org/hello-world",
            "https://github.com/octo-org/hello-world/",
            "http://github.com/octo-org/hello-world.git",
            "https://x-access-token:ghs_abc@github.com/octo-org/hello-world.git",
            "https://ghe.example.com:8443/octo-org/hello-world.git",
            "ssh://git@github.com/octo-org/hello-world.git",
            "ssh://git@github.com:22/octo-org/hello-world.git",
            "git+ssh://git@github.com/octo-org/hello-world",
            "git://github.com/octo-org/hello-world.git",
            "git@github.com:octo-org/hello-world.git",
            "git@github.com:octo-org/hello-world",
            "github.com:octo-org/hello-world.git",
            "gh-alias:octo-org/hello-world.git",
            "  git@github.com:octo-org/hello-world.git\n",
        ] {
            assert_eq!(
                parse_remote_url(url),
                pair("octo-org", "hello-world"),
                "{url}"
            );
        }
        assert_eq!(
            parse_remote_url("https://gitlab.com/group/sub/proj.js.git"),
            pair("sub", "proj.js")
        );
    }

    #[test]
    fn local_and_malformed_urls_name_no_owner() {
        for url in [
            "/srv/git/hello.git",
            "../hello.git",
            "file:///srv/git/octo/hello.git",
            "https://github.com/hello.git",
            "https://github.com",
            "git@github.com:hello",
            "",
            "https://github.com/octo org/hello.git",
        ] {
            assert_eq!(parse_remote_url(url), None, "{url}");
        }
    }
}
