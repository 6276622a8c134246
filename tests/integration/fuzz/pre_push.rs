//! git's pre-push input (`<local ref> <local sha> <remote ref> <remote sha>`
//! per line): any bytes are refused or parsed without a panic, and
//! well-formed lines parse back to exactly what was written.

use forgexec::local::hook::{commits_to_build, parse_pushed_refs};
use proptest::prelude::*;

use super::fuzz;

#[test]
fn any_input_parses_or_is_refused() {
    fuzz(
        "pre_push_any",
        proptest::collection::vec(any::<u8>(), 0..512),
        |bytes| {
            if let Ok(refs) = parse_pushed_refs(bytes.as_slice()) {
                let commits = commits_to_build(&refs);
                prop_assert!(commits.len() <= refs.len());
            }
            Ok(())
        },
    );
}

#[test]
fn well_formed_lines_round_trip() {
    let word = "[!-~]{1,60}";
    let sha = "[0-9a-f]{40}";
    let line = (word, sha, word, sha);
    fuzz(
        "pre_push_round_trip",
        proptest::collection::vec(line, 0..8),
        |lines| {
            let text: String = lines
                .iter()
                .map(|(a, b, c, d)| format!("{a} {b} {c} {d}\n"))
                .collect();
            let refs = parse_pushed_refs(text.as_bytes())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(refs.len(), lines.len());
            for (parsed, (a, b, c, d)) in refs.iter().zip(&lines) {
                prop_assert_eq!(&parsed.local_ref, a);
                prop_assert_eq!(&parsed.local_sha, b);
                prop_assert_eq!(&parsed.remote_ref, c);
                prop_assert_eq!(&parsed.remote_sha, d);
            }
            Ok(())
        },
    );
}
