//! The static forgexec is copied into every build container, so its size is
//! part of the product: it must stay within the 4 MiB target (see
//! docs/benchmarks.md, "binary size", for what takes the space).
//! A size check only; timings belong to `benches/run`, not to tests.

use crate::common;

/// The size target for the stripped static binary.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

#[test]
fn static_binary_stays_within_its_size_budget() {
    let bin = common::static_forgexec();
    let size = std::fs::metadata(&bin)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", bin.display()))
        .len();
    assert!(
        size <= MAX_BYTES,
        "{} is {size} bytes, over the {MAX_BYTES}-byte budget; see docs/benchmarks.md \
         (binary size) for what takes the space and how it was trimmed",
        bin.display()
    );
}

#[test]
fn the_aarch64_static_binary_stays_within_the_same_budget() {
    let bin = common::static_forgexec_aarch64();
    let size = std::fs::metadata(&bin)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", bin.display()))
        .len();
    assert!(
        size <= MAX_BYTES,
        "{} is {size} bytes, over the {MAX_BYTES}-byte budget (docs/benchmarks.md)",
        bin.display()
    );
}
