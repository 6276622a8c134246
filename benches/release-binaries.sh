# Sourced by the benchmarks that run one integration test against release
# binaries (after defining `log`): builds the static forgexec and a release
# forge-launch unless FORGEXEC_STATIC_BIN / FORGE_LAUNCH name them, and
# exports both for the test.
if [[ -z ${FORGEXEC_STATIC_BIN:-} ]]; then
    log "building the static forgexec (./musl-build)"
    FORGEXEC_STATIC_BIN=$(./musl-build | tail -n 1)
fi
if [[ -z ${FORGE_LAUNCH:-} ]]; then
    log "building forge-launch (release)"
    cargo build --quiet --release --bin forge-launch
    FORGE_LAUNCH=$PWD/target/release/forge-launch
fi
export FORGEXEC_STATIC_BIN FORGE_LAUNCH
