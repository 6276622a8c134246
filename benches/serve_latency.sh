#!/usr/bin/env bash
# Issue 12's latency figure: a signed webhook POST to `forge-launch serve`
# until the build's first command runs, beside `forge-launch swarm --wait`
# invoked for the same build, interleaved, on this single-node swarm,
# against a release build of forge-launch. Both paths fetch the .forge.yml
# and post statuses through the test's GitHub stand-in; serve also signs a
# JWT and exchanges it for an installation token, as in production. The
# first command prints /proc/uptime, which containers share with the host,
# so log streaming does not count. Prints both medians and the difference.
#
#   benches/serve_latency.sh [RUNS]        (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "serve_latency: $*" >&2; }

. benches/release-binaries.sh
export FORGE_SERVE_LATENCY_RUNS=${1:-10}
cargo test --quiet --locked --test integration -- --nocapture --exact \
    serve::a_delivery_reaches_the_first_command_beside_forge_launch_swarm 2>&1 |
    grep -E "serve latency|test result|panicked|FAILED"
