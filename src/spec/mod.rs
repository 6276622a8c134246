//! The `.forge.yml` language: loading, validation and JSON Schema. A file is
//! checked for size and UTF-8, mapped by [`source_map`] (positions,
//! duplicate keys, alias bombs; never expanding aliases), parsed by
//! serde_yaml into a `Value` with `<<` merges applied, and then walked by
//! [`validate`] into the typed [`Spec`] while collecting every problem as a
//! [`Diagnostic`] with line, column and a fix. [`SpecError`] renders them
//! all as `PATH:LINE:COLUMN: error: ...` plus `  help: ...` lines.

use std::fmt;
use std::path::Path;

use crate::fsread::{self, FsReadError, Links};

mod model;
mod shell_words;
pub mod source_map;
mod validate;
mod yaml;

pub use model::*;
pub use shell_words::{split as split_shell_words, ShellSyntax};

/// Largest `.forge.yml` accepted.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// One problem in a `.forge.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Where in the document, e.g. `actions.lint[2].run`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    fn render(&self, f: &mut fmt::Formatter<'_>, file: &str) -> fmt::Result {
        write!(
            f,
            "{file}:{}:{}: error: {}",
            self.line, self.column, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Why a `.forge.yml` was refused. Display renders every problem, one
/// `PATH:LINE:COLUMN: error:` line each (plus a `  help:` line).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: error: cannot read the file: {source}\n  help: {}", io_help(.source))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}:{column}: error: the file is not UTF-8 text (invalid byte 0x{byte:02x} at byte offset {offset})\n  help: save the file as UTF-8"
    )]
    NotUtf8 {
        path: String,
        offset: usize,
        byte: u8,
        line: usize,
        column: usize,
    },
    #[error(
        "{path}: error: the file is empty\n  help: add at least an `execute:` list of commands, e.g. `execute: [\"make test\"]`"
    )]
    Empty { path: String },
    #[error(
        "{path}: error: the file is too large ({size} bytes; at most {max} bytes are accepted)\n  help: a .forge.yml describes a build; keep data in other files",
        max = MAX_FILE_BYTES
    )]
    TooLarge { path: String, size: u64 },
    #[error(
        "{path}: error: not a regular file (it is a {kind})\n  help: .forge.yml must be a regular file; a symlink to one inside the workspace is fine"
    )]
    NotRegular { path: String, kind: &'static str },
    #[error(
        "{path}: error: it leads to {}, outside the workspace\n  help: .forge.yml must be a file inside the workspace; a symlink may point only inside it",
        real.display()
    )]
    OutsideWorkspace {
        path: String,
        real: std::path::PathBuf,
    },
    #[error("{}", render_yaml(.path, *.line, *.column, .message, .help.as_deref()))]
    Yaml {
        path: String,
        line: usize,
        column: usize,
        message: String,
        help: Option<String>,
    },
    #[error("{}", Rendered(.path, .diagnostics))]
    Invalid {
        path: String,
        diagnostics: Vec<Diagnostic>,
    },
}

impl SpecError {
    /// Every problem with a position (empty for I/O and similar errors).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            SpecError::Invalid { diagnostics, .. } => diagnostics.clone(),
            SpecError::Yaml {
                line,
                column,
                message,
                help,
                ..
            } => vec![Diagnostic {
                line: *line,
                column: *column,
                path: String::new(),
                message: message.clone(),
                help: help.clone(),
            }],
            _ => Vec::new(),
        }
    }
}

fn io_help(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            "create a .forge.yml in the repository root or pass the path to it"
        }
        std::io::ErrorKind::PermissionDenied => "make the file readable",
        _ => "check that the path names a readable file",
    }
}

fn render_yaml(
    path: &str,
    line: usize,
    column: usize,
    message: &str,
    help: Option<&str>,
) -> String {
    let mut out = if line == 0 {
        format!("{path}: error: {message}")
    } else {
        format!("{path}:{line}:{column}: error: {message}")
    };
    if let Some(help) = help {
        out.push_str("\n  help: ");
        out.push_str(help);
    }
    out
}

struct Rendered<'a>(&'a str, &'a [Diagnostic]);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, diagnostic) in self.1.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            diagnostic.render(f, self.0)?;
        }
        Ok(())
    }
}

/// Read and validate the file at `path` (labelled in messages as given).
/// Only a regular file is read (a FIFO or device is refused, never waited
/// on), up to [`MAX_FILE_BYTES`].
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let label = path.display().to_string();
    let bytes = fsread::read_regular(path, Links::Follow, MAX_FILE_BYTES as u64)
        .map_err(|err| read_error(&label, err))?;
    parse(&label, &bytes)
}

/// Like [`load`], for a `.forge.yml` that must be inside `root` (the
/// workspace) once its symlinks are resolved.
pub fn load_within(root: &Path, path: &Path) -> Result<Spec, SpecError> {
    let label = path.display().to_string();
    let bytes = fsread::read_regular_within(root, path, MAX_FILE_BYTES as u64)
        .map_err(|err| read_error(&label, err))?;
    parse(&label, &bytes)
}

fn read_error(label: &str, err: FsReadError) -> SpecError {
    let path = label.to_string();
    match err {
        FsReadError::Open { source, .. } | FsReadError::Read { source, .. } => {
            SpecError::Io { path, source }
        }
        FsReadError::NotRegular { kind, .. } => SpecError::NotRegular { path, kind },
        FsReadError::Symlink { .. } => SpecError::NotRegular {
            path,
            kind: "symbolic link",
        },
        FsReadError::TooLarge { size, .. } => SpecError::TooLarge { path, size },
        FsReadError::Outside { real, .. } => SpecError::OutsideWorkspace { path, real },
    }
}

/// Validate `.forge.yml` content; `label` names it in messages.
pub fn parse(label: &str, bytes: &[u8]) -> Result<Spec, SpecError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SpecError::TooLarge {
            path: label.to_string(),
            size: bytes.len() as u64,
        });
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let offset = err.valid_up_to();
            let before = String::from_utf8_lossy(&bytes[..offset]);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(SpecError::NotUtf8 {
                path: label.to_string(),
                offset,
                byte: bytes[offset],
                line,
                column,
            });
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    validate::validate(label, text)
}

/// The JSON Schema (draft-07) of the language, for editors.
pub fn json_schema() -> &'static str {
    include_str!("schema.json")
}

impl Spec {
    /// One line describing the spec, e.g. `image alpine:3, 2 setup, 3
    /// execute commands, actions: lint, docs; artifacts: 2 globs (always);
    /// timeout 30m`.
    pub fn summary(&self) -> String {
        let mut first = Vec::new();
        match &self.image {
            Some(image) => first.push(format!("image {image}")),
            None => first.push("no image".to_string()),
        }
        let mut counts = Vec::new();
        if !self.setup.is_empty() {
            counts.push((self.setup.len(), "setup"));
        }
        if let Some(execute) = &self.execute {
            counts.push((execute.len(), "execute"));
        }
        if let Some((last, _)) = counts.last() {
            let plural = if *last == 1 { "command" } else { "commands" };
            let joined: Vec<String> = counts
                .iter()
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
            first.push(format!("{} {plural}", joined.join(", ")));
        }
        if !self.actions.is_empty() {
            let names: Vec<&str> = self.actions.keys().map(String::as_str).collect();
            first.push(format!("actions: {}", names.join(", ")));
        }
        let mut parts = vec![first.join(", ")];
        let mut env = Vec::new();
        if !self.environment.is_empty() {
            env.push(count(self.environment.len(), "variable"));
        }
        if !self.secrets.is_empty() {
            env.push(count(self.secrets.len(), "secret"));
        }
        if !env.is_empty() {
            parts.push(format!("environment: {}", env.join(", ")));
        }
        if !self.services.is_empty() {
            let services: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
            parts.push(format!("services: {}", services.join(", ")));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|p| format!("{}->{}", p.published, p.target))
                .collect();
            parts.push(format!("ports: {}", ports.join(", ")));
        }
        if self.artifacts.paths.is_empty() {
            parts.push("no artifacts".to_string());
        } else {
            let mut artifacts = count(self.artifacts.paths.len(), "glob");
            if !self.artifacts.exclude.is_empty() {
                artifacts.push_str(&format!(", {} excluded", self.artifacts.exclude.len()));
            }
            let when = match self.artifacts.when {
                When::Always => "always",
                When::OnSuccess => "on_success",
                When::OnFailure => "on_failure",
            };
            parts.push(format!("artifacts: {artifacts} ({when})"));
        }
        if let Some(timeout) = self.timeout {
            parts.push(format!("timeout {}", humantime::format_duration(timeout)));
        }
        if !self.resources.is_empty() {
            let mut asked = Vec::new();
            if let Some(nanos) = self.resources.nano_cpus {
                asked.push(format!("{} CPUs", nanos as f64 / 1e9));
            }
            if let Some(bytes) = self.resources.memory_bytes {
                asked.push(format!("{} memory", crate::facts::format_size(bytes)));
            }
            if let Some(pids) = self.resources.pids {
                asked.push(format!("{pids} pids"));
            }
            parts.push(format!("resources: {}", asked.join(", ")));
        }
        parts.join("; ")
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ok(text: &str) -> Spec {
        match parse("t.yml", text.as_bytes()) {
            Ok(spec) => spec,
            Err(err) => panic!("refused:\n{err}"),
        }
    }

    #[test]
    fn typed_model_with_accurate_lines() {
        let spec = ok("image: alpine:3\n\
             x-d: &d\n  timeout: 5m\n  env: {A: 1}\n\
             setup:\n  - echo one\n  - [\"ls\", \"-l\"]\n\
             execute:\n  - <<: *d\n    run: make\n    allow_failure: true\n\
             artifacts:\n  paths: [dist]\n  when: on_success\n\
             timeout: 1h\n");
        assert_eq!(spec.image.as_deref(), Some("alpine:3"));
        assert_eq!(spec.setup[0].run, Run::Shell("echo one".into()));
        assert_eq!(spec.setup[0].line, 6);
        assert_eq!(spec.setup[1].run, Run::Exec(vec!["ls".into(), "-l".into()]));
        assert_eq!(spec.setup[1].line, 7);
        let execute = spec.execute.as_deref().expect("execute");
        assert_eq!(execute[0].line, 9);
        assert_eq!(execute[0].timeout, Some(Duration::from_secs(300)));
        assert_eq!(execute[0].env.get("A").map(String::as_str), Some("1"));
        assert!(execute[0].allow_failure);
        assert_eq!(spec.artifacts.when, When::OnSuccess);
        assert_eq!(spec.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(
            spec.summary(),
            "image alpine:3, 2 setup, 1 execute command; artifacts: 1 glob (on_success); timeout 1h"
        );
    }

    #[test]
    fn resources_in_each_form() {
        let spec = ok("resources: {cpus: 1.5, memory: 512MiB, pids: 100}\nexecute: [make]\n");
        assert_eq!(
            spec.resources,
            Resources {
                nano_cpus: Some(1_500_000_000),
                memory_bytes: Some(512 << 20),
                pids: Some(100),
            }
        );
        assert_eq!(
            spec.summary(),
            "no image, 1 execute command; no artifacts; resources: 1.5 CPUs, 512MiB memory, 100 pids"
        );
        let spec = ok("resources: {cpus: 2, memory: 1048576}\nexecute: [make]\n");
        assert_eq!(spec.resources.nano_cpus, Some(2_000_000_000));
        assert_eq!(spec.resources.memory_bytes, Some(1 << 20));
        assert_eq!(spec.resources.pids, None);
        let spec = ok("resources: {memory: \"2 GiB\"}\nexecute: [make]\n");
        assert_eq!(spec.resources.memory_bytes, Some(2 << 30));
        for bad in [
            "cpus: 0",
            "cpus: .nan",
            "cpus: 0.0000000001",
            "cpus: 2000000",
            "cpus: \"2\"",
            "memory: 0",
            "memory: 1.5GiB",
            "memory: 16EiB",
            "memory: 99999999T",
            "pids: -1",
            "pids: 0",
            "pids: 9223372036854775808",
        ] {
            let text = format!("resources: {{{bad}}}\nexecute: [make]\n");
            assert!(parse("t.yml", text.as_bytes()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn environment_values_keep_the_text_as_written() {
        let spec = ok("x-v: &v 0x10\n\
             environment:\n  PY: 3.10\n  HEX: *v\n  EXP: 1e3\n  ON: yes\n  T: true\n  Q: '3.10'\n  N: 007\n\
             execute:\n  - run: make\n    env:\n      V: 1.50\n");
        let env = |name: &str| spec.environment.get(name).map(String::as_str);
        assert_eq!(env("PY"), Some("3.10"));
        assert_eq!(env("HEX"), Some("0x10"));
        assert_eq!(env("EXP"), Some("1e3"));
        assert_eq!(env("ON"), Some("yes"));
        assert_eq!(env("T"), Some("true"));
        assert_eq!(env("Q"), Some("3.10"));
        assert_eq!(env("N"), Some("007"));
        let execute = spec.execute.as_deref().expect("execute");
        assert_eq!(execute[0].env.get("V").map(String::as_str), Some("1.50"));
    }

    #[test]
    fn a_duplicate_key_is_reported_with_every_other_problem() {
        let err = parse(
            "f.yml",
            b"execute: [make]\nimage: [a]\nimage: b\ntimeout: 0\n",
        )
        .expect_err("invalid");
        let messages: Vec<String> = err.diagnostics().into_iter().map(|d| d.message).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("duplicate key `image`"),
            "{messages:?}"
        );
        assert!(messages[1].contains("zero"), "{messages:?}");
    }

    #[test]
    fn byte_order_mark_is_accepted() {
        let spec = ok("\u{feff}execute: [make]\n");
        assert_eq!(spec.action_names(), ["execute"]);
    }

    #[test]
    fn every_diagnostic_is_rendered_with_position_and_help() {
        let err = parse("f.yml", b"execute: []\ntimeout: 0\nimage: [x]\n").expect_err("invalid");
        let diagnostics = err.diagnostics();
        assert_eq!(diagnostics.len(), 3);
        assert_eq!(diagnostics[0].path, "execute");
        assert_eq!((diagnostics[1].line, diagnostics[1].column), (2, 10));
        let text = err.to_string();
        assert!(text.starts_with("f.yml:1:10: error: `execute` has no commands\n  help: "));
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    #[test]
    fn non_utf8_and_oversized_input_are_refused() {
        let err = parse("f.yml", b"a: 1\nb: \xff\n").expect_err("not UTF-8");
        assert!(
            matches!(
                err,
                SpecError::NotUtf8 {
                    offset: 8,
                    line: 2,
                    column: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(matches!(
            parse("f.yml", &big),
            Err(SpecError::TooLarge { .. })
        ));
        assert!(matches!(parse("f.yml", b""), Err(SpecError::Empty { .. })));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join(".forge.yml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = load(&fifo).expect_err("a FIFO is not a .forge.yml");
        assert!(
            matches!(
                err,
                SpecError::NotRegular {
                    kind: "named pipe (FIFO)",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}: error: not a regular file", fifo.display())),
            "{text}"
        );
        let err = load(Path::new("/dev/ptmx")).expect_err("a terminal is not a .forge.yml");
        assert!(matches!(err, SpecError::NotRegular { .. }), "{err:?}");
    }

    #[test]
    fn within_the_workspace_a_link_may_not_lead_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("ci")).expect("mkdir");
        std::fs::write(ws.join("ci/forge.yml"), "execute: [make]\n").expect("write");
        std::fs::write(dir.path().join("evil.yml"), "execute: [evil]\n").expect("write");
        std::os::unix::fs::symlink("ci/forge.yml", ws.join(".forge.yml")).expect("link");
        let spec = load_within(&ws, &ws.join(".forge.yml")).expect("a link inside is fine");
        assert_eq!(spec.action_names(), ["execute"]);
        std::fs::remove_file(ws.join(".forge.yml")).expect("rm");
        std::os::unix::fs::symlink("../evil.yml", ws.join(".forge.yml")).expect("link");
        let err = load_within(&ws, &ws.join(".forge.yml")).expect_err("outside");
        assert!(matches!(err, SpecError::OutsideWorkspace { .. }), "{err:?}");
    }
}
