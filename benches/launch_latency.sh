#!/usr/bin/env bash
# Time from invocation to the build's first command, `forge-launch swarm`
# versus the same steps by hand (`docker service create` + `docker cp` +
# `docker start`), on this (single-node) swarm. Prints every sample, the
# medians and the ratio.
#
# The build's first command prints the kernel's uptime clock
# (/proc/uptime, shared by containers, 10 ms resolution); the script reads
# the same clock just before it invokes either path, so log streaming does
# not count. The image is busybox with the workspace baked in at
# /forge/workspace, so neither path needs the network.
#
#   benches/launch_latency.sh [RUNS]        (default 10)
#   FORGE_LAUNCH=path/to/forge-launch FORGEXEC_STATIC_BIN=path/to/forgexec ...
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${1:-10}

log() { echo "launch_latency: $*" >&2; }
die() { log "$*"; exit 1; }

docker info --format '{{.Swarm.LocalNodeState}}' | grep -qx active \
    || die "this daemon is not in swarm mode (docker swarm init)"
[[ -x /bin/busybox ]] || die "busybox-static is needed (/bin/busybox)"

if [[ -z ${FORGEXEC_STATIC_BIN:-} ]]; then
    log "building the static forgexec (./musl-build)"
    FORGEXEC_STATIC_BIN=$(./musl-build | tail -n 1)
fi
[[ -f $FORGEXEC_STATIC_BIN ]] || die "no forgexec at $FORGEXEC_STATIC_BIN"
if [[ -z ${FORGE_LAUNCH:-} ]]; then
    log "building forge-launch"
    cargo build --quiet --bin forge-launch
    FORGE_LAUNCH=target/debug/forge-launch
fi

work=$(mktemp -d)
tag="forge-latency-bench:$$"
cleanup() {
    docker service ls -q --filter label=forge.bench="$$" | xargs -r docker service rm >/dev/null 2>&1 || true
    docker rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# busybox image with the repository already in the workspace
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$root/forge/workspace"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in sh cat echo; do ln -s busybox "$root/bin/$applet"; done
cat > "$work/forge.yml" <<EOF
image: $tag
execute:
  - echo UPTIME=\$(cat /proc/uptime)
EOF
cp "$work/forge.yml" "$root/forge/workspace/.forge.yml"
tar --numeric-owner -C "$root" -cf - . | docker import - "$tag" >/dev/null

sha=0123456789abcdef0123456789abcdef01234567
uptime_now() { cut -d' ' -f1 /proc/uptime; }
# milliseconds between two uptime readings
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d\n", (b - a) * 1000 }'; }
first_command_uptime() { grep -o 'UPTIME=[0-9][0-9.]*' | head -n 1 | cut -d= -f2; }

run_forge_launch() {
    local start out t
    start=$(uptime_now)
    out=$("$FORGE_LAUNCH" swarm --repo bench/latency --pr "$1" --sha "$sha" \
        --config "$work/forge.yml" --forgexec "$FORGEXEC_STATIC_BIN" --wait 2>&1) \
        || die "forge-launch failed: $out"
    t=$(first_command_uptime <<<"$out")
    [[ -n $t ]] || die "no UPTIME line in forge-launch output: $out"
    ms_between "$start" "$t"
}

run_by_hand() {
    local start id c="" out t
    start=$(uptime_now)
    id=$(docker service create --detach --quiet --restart-condition none \
        --name "bench-hand-$$-$1" --label forge.bench="$$" \
        --env FORGE_OWNER=bench --env FORGE_REPO=latency --env FORGE_SHA=$sha \
        --env FORGE_ACTION=execute --env FORGE_BUILD_ID="hand-$1" \
        "$tag" /forgexec 2>/dev/null)
    # poll the task (as the seed does, but every 50 ms) until it names its container
    while [[ -z $c ]]; do
        c=$(docker service ps --no-trunc -q "$id" 2>/dev/null | head -n 1 \
            | xargs -r docker inspect --format '{{if .Status.ContainerStatus}}{{.Status.ContainerStatus.ContainerID}}{{end}}' 2>/dev/null || true)
        [[ -n $c ]] || sleep 0.05
    done
    docker cp "$FORGEXEC_STATIC_BIN" "$c:/forgexec"
    docker start "$c" >/dev/null
    docker wait "$c" >/dev/null
    out=$(docker logs "$c" 2>&1)
    docker service rm "$id" >/dev/null
    t=$(first_command_uptime <<<"$out")
    [[ -n $t ]] || die "no UPTIME line in the hand-made build's output: $out"
    ms_between "$start" "$t"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

launch_samples=()
hand_samples=()
for i in $(seq 1 "$RUNS"); do
    launch_samples+=("$(run_forge_launch "$i")")
    hand_samples+=("$(run_by_hand "$i")")
    log "run $i: forge-launch ${launch_samples[-1]} ms, by hand ${hand_samples[-1]} ms"
done

launch_median=$(printf '%s\n' "${launch_samples[@]}" | median)
hand_median=$(printf '%s\n' "${hand_samples[@]}" | median)
echo "invocation -> first build command, median of $RUNS (ms)"
echo "forge-launch swarm:                       $launch_median"
echo "service create + cp + start by hand:      $hand_median"
awk -v a="$launch_median" -v b="$hand_median" \
    'BEGIN { if (b > 0) printf "ratio forge-launch / by hand:              %.2f\n", a / b }'
