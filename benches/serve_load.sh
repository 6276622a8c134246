#!/usr/bin/env bash
# `forge-launch serve` under load (issue 12's performance figures): 500
# signed deliveries by default (100 pull requests, each opened and pushed 3
# more times, plus a ping each), 50 in flight, against a release build of
# forge-launch on this single-node swarm. Prints the acknowledgement p50 and
# p99 and serve's peak RSS; the test itself checks that every delivery was
# answered and each pull request ends with one build, of its newest sha.
#
#   benches/serve_load.sh
#   FORGE_SERVE_PRS=20 FORGE_SERVE_PUSHES=5 FORGE_SERVE_IN_FLIGHT=50 benches/serve_load.sh
#   FORGE_SERVE_FLAGS="--max-launches 4" benches/serve_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "serve_load: $*" >&2; }

. benches/release-binaries.sh
export FORGE_SERVE_PRS=${FORGE_SERVE_PRS:-100}
export FORGE_SERVE_PUSHES=${FORGE_SERVE_PUSHES:-4}
export FORGE_SERVE_IN_FLIGHT=${FORGE_SERVE_IN_FLIGHT:-50}
cargo test --quiet --locked --test integration -- --nocapture --exact \
    serve::many_deliveries_end_in_one_build_per_pull_request_at_its_newest_sha 2>&1 |
    grep -E "serve load|test result|panicked|FAILED"
