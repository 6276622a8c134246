//! Tiny git CLI wrapper for making test repositories.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    /// `git init` in `dir` (created if missing) with branch `main`, a test
    /// identity and no signing.
    pub fn init(dir: &Path) -> GitRepo {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let repo = GitRepo {
            dir: dir.to_path_buf(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Forge Test"]);
        repo.git(&["config", "user.email", "forge-test@example.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `git ARGS` in the repository; panics with stderr on failure;
    /// returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .unwrap_or_else(|e| panic!("git not runnable ({e}): apt-get install git"));
        assert!(
            out.status.success(),
            "git {args:?} in {} failed:\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes a file (parents created), relative to the work tree.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> &Self {
        let p = self.dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent folder");
        }
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self
    }

    /// `git add -A && git commit`; returns the new HEAD sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Writes the files and commits them; returns the sha.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, contents) in files {
            self.write(path, contents);
        }
        self.commit(message)
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}
