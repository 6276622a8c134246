#!/usr/bin/env bash
# Issue 14's figure: launch latency on the test cluster (three dockerd nodes
# in containers, tests/integration/cluster), invocation of `forge-launch
# swarm --wait` to the build's first command, for a build on the manager
# (the launcher's own daemon, over mTLS) and on a worker (its daemon reached
# over mTLS), interleaved, against a release build of forge-launch. The
# build fetches its workspace and posts statuses through the test's GitHub
# stand-in on the cluster network. The first command prints /proc/uptime,
# which the nodes' containers share with the host, so log streaming does
# not count. Prints both medians.
#
#   benches/cluster_latency.sh [RUNS]        (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "cluster_latency: $*" >&2; }

. benches/release-binaries.sh
export FORGE_CLUSTER_LATENCY_RUNS=${1:-10}
cargo test --quiet --locked --test integration -- --nocapture --exact \
    cluster::latency::launch_latency_on_the_manager_and_on_a_worker 2>&1 |
    grep -E "cluster latency|cluster: node image|test result|panicked|FAILED"
