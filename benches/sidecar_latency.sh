#!/usr/bin/env bash
# Issue 13's latency figure: the time from the build container's start to
# its first `setup` command with one sidecar service that is ready at once
# (a busybox httpd), against the same build without it, interleaved, with
# `forge-launch local` (the sidecars are made and started the same way in
# swarm mode) in a release build. The setup command prints its container's
# PID 1 start time and /proc/uptime (both since boot), so neither the
# launcher's preparation nor log streaming counts. Prints both medians and
# the difference.
#
#   benches/sidecar_latency.sh [RUNS]        (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "sidecar_latency: $*" >&2; }

. benches/release-binaries.sh
export FORGE_SIDECAR_LATENCY_RUNS=${1:-10}
cargo test --quiet --locked --test integration -- --nocapture --exact \
    sidecars::a_service_ready_at_once_adds_little_before_the_first_setup_command 2>&1 |
    grep -E "sidecar latency|test result|panicked|FAILED"
