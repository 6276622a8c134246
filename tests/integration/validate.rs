//! `forgexec validate` and `forgexec schema` on the fixtures, through the
//! real binary: every good fixture validates (exit 0, one-line summary) and
//! every bad fixture fails (exit 2) with exactly the diagnostics in its
//! `.expected` file. The JSON Schema must agree on the good fixtures and
//! refuse a selection of bad ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_forgexec");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn forgexec(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {BIN}: {err}"))
}

/// The `.yml` fixtures of `fixtures/spec/KIND`, as paths relative to the
/// crate root (that is how messages name them).
fn fixtures(kind: &str) -> Vec<String> {
    let dir = Path::new(ROOT).join("fixtures/spec").join(kind);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yml"))
        .map(|name| format!("fixtures/spec/{kind}/{name}"))
        .collect();
    names.sort();
    names
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn good_fixtures_validate_with_a_summary() {
    let good = fixtures("good");
    assert!(
        good.len() >= 8,
        "expected at least 8 good fixtures, found {}",
        good.len()
    );
    for path in good {
        let out = forgexec(&["validate", &path], Path::new(ROOT));
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path} should be valid; stderr:\n{}",
            text(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{path}: unexpected stderr: {}",
            text(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("{path}: ok: ")),
            "{path}: stdout {stdout:?}"
        );
        assert_eq!(
            stdout.lines().count(),
            1,
            "{path}: summary must be one line: {stdout:?}"
        );
    }
}

#[test]
fn bad_fixtures_fail_with_exactly_the_expected_diagnostics() {
    let bad = fixtures("bad");
    assert!(
        bad.len() >= 30,
        "expected at least 30 bad fixtures, found {}",
        bad.len()
    );
    let mut failures = Vec::new();
    for path in &bad {
        let expected_path = Path::new(ROOT).join(path.replace(".yml", ".expected"));
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(expected) => expected,
            Err(err) => {
                failures.push(format!(
                    "{path}: cannot read {}: {err}",
                    expected_path.display()
                ));
                continue;
            }
        };
        let out = forgexec(&["validate", path], Path::new(ROOT));
        let stderr = text(&out.stderr);
        if out.status.code() != Some(2) || !out.stdout.is_empty() || stderr != expected {
            failures.push(format!(
                "{path}: exit {:?}\n--- expected stderr\n{expected}--- actual stderr\n{stderr}--- stdout\n{}",
                out.status.code(),
                text(&out.stdout)
            ));
        }
    }
    // Every .expected belongs to a fixture.
    let dir = Path::new(ROOT).join("fixtures/spec/bad");
    for entry in std::fs::read_dir(&dir).expect("list bad fixtures") {
        let name = entry
            .expect("directory entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(stem) = name.strip_suffix(".expected") {
            if !dir.join(format!("{stem}.yml")).exists() {
                failures.push(format!("{name} has no {stem}.yml"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_of_a_file_is_reported() {
    let out = forgexec(
        &["validate", "fixtures/spec/bad/multiple-problems.yml"],
        Path::new(ROOT),
    );
    let stderr = text(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|line| line.contains(": error: "))
        .count();
    let helps = stderr
        .lines()
        .filter(|line| line.starts_with("  help: "))
        .count();
    assert_eq!(errors, 13, "{stderr}");
    assert_eq!(helps, 13, "{stderr}");
}

#[test]
fn default_path_is_dot_forge_yml() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".forge.yml"), "execute: [make]\n").expect("write");
    let out = forgexec(&["validate"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        ".forge.yml: ok: no image, 1 execute command; no artifacts\n"
    );
}

#[test]
fn missing_file_is_named_with_a_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = forgexec(&["validate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(".forge.yml: error: cannot read the file: "),
        "{stderr}"
    );
    assert!(stderr.contains("  help: create a .forge.yml"), "{stderr}");
}

#[test]
fn files_over_one_mib_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut content = String::from("execute: [make]\nx-padding: \"");
    content.push_str(&"a".repeat(1024 * 1024));
    content.push_str("\"\n");
    let path = dir.path().join("big.yml");
    std::fs::write(&path, &content).expect("write");
    let out = forgexec(&["validate", "big.yml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "big.yml: error: the file is too large ({} bytes; at most 1048576 bytes are accepted)\n  help: a .forge.yml describes a build; keep data in other files\n",
            content.len()
        )
    );
}

fn schema() -> serde_json::Value {
    let out = forgexec(&["schema"], Path::new(ROOT));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("schema is not JSON: {err}"))
}

/// A fixture as JSON, the way an editor sees it (merge keys applied).
fn as_json(path: &str) -> serde_json::Value {
    let full = PathBuf::from(ROOT).join(path);
    let content = std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{path}: {err}"));
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(&content).unwrap_or_else(|err| panic!("{path}: {err}"));
    value
        .apply_merge()
        .unwrap_or_else(|err| panic!("{path}: {err}"));
    serde_json::to_value(value).unwrap_or_else(|err| panic!("{path}: not JSON-compatible: {err}"))
}

#[test]
fn schema_accepts_every_good_fixture() {
    let schema = schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let validator =
        jsonschema::draft7::new(&schema).unwrap_or_else(|err| panic!("bad schema: {err}"));
    for path in fixtures("good") {
        let instance = as_json(&path);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{path} rejected by the schema: {errors:?}"
        );
    }
}

#[test]
fn schema_rejects_bad_fixtures() {
    let schema = schema();
    let validator =
        jsonschema::draft7::new(&schema).unwrap_or_else(|err| panic!("bad schema: {err}"));
    for name in [
        "unknown-key",
        "artifact-bad-when",
        "artifact-unknown-key",
        "artifact-no-paths",
        "artifact-absolute",
        "artifact-dotdot",
        "port-bad",
        "port-out-of-range",
        "ports-list",
        "env-bad-name",
        "env-forge-reserved",
        "env-non-scalar",
        "command-no-run",
        "command-unknown-key",
        "command-empty-list",
        "commands-empty",
        "execute-string",
        "no-execute-no-actions",
        "action-bad-name",
        "secrets-bad",
        "multiple-problems",
    ] {
        let path = format!("fixtures/spec/bad/{name}.yml");
        let instance = as_json(&path);
        assert!(
            !validator.is_valid(&instance),
            "{path} accepted by the schema"
        );
    }
}

#[test]
fn validate_refuses_a_fifo_at_once() {
    // issue 11: `forgexec validate FIFO` blocked in `read` forever.
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("forge.yml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let out = crate::common::output_within(
        Command::new(BIN)
            .args(["validate", "forge.yml"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG"),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).lines().next(),
        Some("forge.yml: error: not a regular file (it is a named pipe (FIFO))")
    );
}
