//! Fuzz targets on the stable toolchain: property tests (proptest) that feed
//! generated input to the parsers and transformers that see untrusted data.
//! Each target runs `FORGE_FUZZ_CASES` cases (default [`CI_CASES`]) from a
//! fixed seed (`FORGE_FUZZ_SEED`, default [`CI_SEED`]), so a CI failure
//! reproduces; `benches/fuzz` runs them long. A failure names the target,
//! the seed and the shrunk input.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

mod masker;
mod pre_push;
mod redact_url;
mod retry_after;
mod sidecar_wire;
mod spec;
mod unpack;
#[cfg(feature = "launcher")]
mod webhook;

/// Cases per target in CI: a short, fixed budget.
pub const CI_CASES: u32 = 2_000;
/// The seed CI uses (32 bytes for ChaCha, derived from this number).
pub const CI_SEED: u64 = 0x666f_7267_6578_6563;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text.parse().unwrap_or_else(|_| {
            panic!("{name}=`{text}` is not a whole number: unset it or fix it")
        }),
    }
}

/// Runs `test` on `FORGE_FUZZ_CASES` inputs drawn from `strategy`; panics
/// with the shrunk failing input. Prints how many cases ran.
pub fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = env_number("FORGE_FUZZ_CASES", u64::from(CI_CASES));
    let cases = u32::try_from(cases).expect("FORGE_FUZZ_CASES fits in 32 bits");
    let seed = env_number("FORGE_FUZZ_SEED", CI_SEED);
    let mut seed_bytes = [0u8; 32];
    for (i, chunk) in seed_bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed.rotate_left(i as u32 * 16) ^ i as u64).to_le_bytes());
    }
    let config = Config {
        cases,
        failure_persistence: None,
        // Shrinking a long run's failure must not take longer than the run.
        max_shrink_iters: 10_000,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("fuzz target `{target}` (seed {seed}, {cases} cases): {failure}");
    }
    eprintln!("fuzz target `{target}`: {cases} cases passed (seed {seed})");
}
