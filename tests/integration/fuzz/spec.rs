//! The `.forge.yml` loader: any bytes, and YAML-shaped text built from the
//! language's own keys, anchors, aliases, merges and flow collections, are
//! accepted or refused without a panic; every refusal points inside the
//! file; and environment values written as plain scalars come back as
//! written.

use forgexec::spec::{parse, SpecError};
use proptest::prelude::*;

use super::fuzz;

/// Refusals name positions that exist in the file.
fn check(text: &[u8]) -> Result<(), TestCaseError> {
    let lines = text.split(|b| *b == b'\n').count();
    match parse("f.yml", text) {
        Ok(spec) => {
            let _ = spec.summary();
        }
        Err(err) => {
            prop_assert!(!err.to_string().is_empty());
            if !matches!(err, SpecError::Yaml { .. }) {
                for d in err.diagnostics() {
                    prop_assert!(d.line >= 1 && d.line <= lines + 1, "{d:?} in {lines} lines");
                    prop_assert!(d.column >= 1, "{d:?}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn any_bytes_are_loaded_or_refused() {
    fuzz(
        "spec_any_bytes",
        proptest::collection::vec(any::<u8>(), 0..512),
        |bytes| check(&bytes),
    );
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "image",
        "environment",
        "secrets",
        "ports",
        "setup",
        "execute",
        "actions",
        "artifacts",
        "timeout",
        "run",
        "name",
        "env",
        "workdir",
        "allow_failure",
        "paths",
        "exclude",
        "when",
        "lint",
        "A",
        "<<",
        "&a",
        "*a",
        "&b",
        "*b",
        ": ",
        ":",
        "- ",
        "-",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "\n",
        "\n  ",
        "\n    ",
        "\n  - ",
        "  ",
        "\t",
        "'",
        "\"",
        "#",
        "|",
        ">",
        "---",
        "...",
        "!tag ",
        "~",
        "0",
        "3.10",
        "0x10",
        "1e3",
        "yes",
        "5m",
        "make test",
        "dist/**",
        "/etc",
        "..",
        "\\",
        "?",
        "%YAML 1.2",
        "on_success",
        "always",
        "80",
        "65536",
        "-1",
    ])
}

#[test]
fn yaml_shaped_text_is_loaded_or_refused() {
    fuzz(
        "spec_yaml_shaped",
        proptest::collection::vec(token(), 0..64),
        |tokens| check(tokens.concat().as_bytes()),
    );
}

#[test]
fn plain_environment_values_come_back_as_written() {
    let name = "[A-Z][A-Z0-9_]{0,8}";
    let value = prop_oneof![
        "[0-9]{1,4}\\.[0-9]{1,4}",
        "0x[0-9a-f]{1,4}",
        "[1-9]e[0-9]",
        "0[0-7]{1,3}",
        "(yes|no|on|off|true|false|True|NO)",
        "[a-z][a-z0-9.]{0,10}",
    ];
    fuzz(
        "spec_environment_as_written",
        proptest::collection::btree_map(name, value, 1..8),
        |env| {
            let mut text = String::from("execute: [make]\nenvironment:\n");
            for (name, value) in &env {
                text.push_str(&format!("  {name}: {value}\n"));
            }
            let spec = parse("f.yml", text.as_bytes())
                .map_err(|err| TestCaseError::fail(format!("{err}\n{text}")))?;
            for (name, value) in &env {
                prop_assert_eq!(spec.environment.get(name), Some(value), "{}", text);
            }
            Ok(())
        },
    );
}
