#!/usr/bin/env bash
# The docker chaos suite, from a clean checkout:
#   1. cargo build --release --locked --bins, and the image (build-image.sh,
#      which also installs libfaketime when it can, for clock faults);
#   2. a fresh cluster (down -v, then up with docker-compose.chaos.yml: no
#      restart policy, libfaketime, one clock spec file per node; and, for
#      power-loss faults, each node's /data on a lazy filesystem mounted on
#      the host by leasehold-lazyfs and bound in by
#      docker-compose.powerloss.yml), healthy;
#   3. leasehold-chaos run --backend docker for --duration seconds: every
#      fault kind the machine supports, overlapping the workload (lease-API
#      workers with a fenced register, Kubernetes-style compare-and-swap
#      Put clients with skewed clocks, deleters, request ids reused on
#      purpose, four watchers), then the checker (exit 0: no anomaly; it
#      includes at least 200 successful operations per second);
#   4. a fresh cluster again and the negative control: the workload without
#      fencing under client pauses, which the checker must catch. (The other
#      negative controls, a Put that stores the client's renewTime and a WAL
#      that acknowledges without fdatasync losing power, need the debug-only
#      --fault-put-trusts-client-times and --fault-skip-wal-sync and run in
#      crates/chaos/tests/chaos.rs on local processes.);
#   5. the cluster is taken down (also on failure or Ctrl-C).
# Reports go to OUT (default target/chaos/<timestamp>; the negative control
# in OUT/negative), with each node's docker log under logs/.
# It uses the same containers and volumes as cluster/up.sh: a cluster that
# runs already is replaced, and its data deleted.
# Usage: cluster/chaos.sh [--duration SECS] [--seed N] [--out DIR] [--skip-build]
#                         [--negative-control-only] [--no-negative-control]
#                         [--no-power-loss] [--tls]
#   --skip-build     use the existing binaries and leasehold:local image
#   --no-power-loss  keep the data in docker volumes (power-loss faults are
#                    then reported unsupported); without it they run when
#                    /dev/fuse exists and this runs as root (the FUSE mounts
#                    are made on the host; the containers need nothing)
#   --tls            the TLS variant: docker-compose.tls.yml on top (a
#                    `certs` container makes the PKI in cluster/.tls, nodes
#                    serve TLS with client certificates, tokens and rules),
#                    leasehold-chaos run --tls (it reads cluster/.tls/ca.crt
#                    and chaos.crt/.key); cluster/.tls is deleted at the end
# Env:   CHAOS_READY_TIMEOUT  seconds to wait for a healthy cluster (default 120)
#        LEASEHOLD_CHAOS_DIR  where the per-node clock spec files live
#                             (default cluster/.chaos)
# Exits 0 only if every run that was asked for passed.
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

duration=180
seed=""
out_dir=""
build=1
main_run=1
negative=1
power_loss=auto
usage() { sed -n '2,42p' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) [ $# -ge 2 ] || die "--duration needs a value"; duration=$2; shift ;;
        --seed) [ $# -ge 2 ] || die "--seed needs a value"; seed=$2; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a value"; out_dir=$2; shift ;;
        --skip-build) build=0 ;;
        --negative-control-only) main_run=0 ;;
        --no-negative-control) negative=0 ;;
        --no-power-loss) power_loss=0 ;;
        --tls) enable_tls ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
if ! [[ "$duration" =~ ^[0-9]+$ ]] || [ "$duration" -eq 0 ]; then
    die "--duration must be a positive number of seconds, not '$duration'"
fi
[ -z "$seed" ] || [[ "$seed" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, not '$seed'"
[ "$main_run" = 1 ] || [ "$negative" = 1 ] || die "--negative-control-only and --no-negative-control leave nothing to run"
ready_timeout="${CHAOS_READY_TIMEOUT:-120}"

OUT_DIR=${out_dir:-$TARGET_DIR/chaos/$(date +%Y%m%d-%H%M%S)}
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$PWD/$OUT_DIR" ;; esac
CHAOS_BIN="$TARGET_DIR/release/leasehold-chaos"
seed_args=()
[ -z "$seed" ] || seed_args=(--seed "$seed")
# leasehold-chaos adds docker-compose.tls.yml itself. Its credentials are
# given explicitly: it takes --cacert/--cert/--key from LEASEHOLD_CACERT/
# CERT/KEY too, which enable_tls exports for `lh` as the `admin` pair, and
# the suite must run as its own `chaos` client.
tls_args=()
if [ "$LEASEHOLD_TLS" = 1 ]; then
    tls_args=(--tls --cacert "$LEASEHOLD_TLS_DIR/ca.crt"
        --cert "$LEASEHOLD_TLS_DIR/chaos.crt" --key "$LEASEHOLD_TLS_DIR/chaos.key")
fi

# The per-node clock spec files docker-compose.chaos.yml mounts. Exported:
# docker-compose reads it, and so does the backend when it recreates a node.
export LEASEHOLD_CHAOS_DIR="${LEASEHOLD_CHAOS_DIR:-$CLUSTER_DIR/.chaos}"
case "$LEASEHOLD_CHAOS_DIR" in /*) ;; *) LEASEHOLD_CHAOS_DIR="$PWD/$LEASEHOLD_CHAOS_DIR" ;; esac

command -v docker >/dev/null || die "docker is not installed"
command -v jq >/dev/null || die "jq is not installed (used to read the cluster status)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"

# ---- 1. build ------------------------------------------------------------
if [ "$build" = 1 ]; then
    command -v cargo >/dev/null || die "cargo is not installed"
    log "building the release binaries (cargo build --release --locked --bins; may wait on the cargo lock)"
    (cd "$REPO_ROOT" && cargo build --release --locked --bins) || die "cargo build --release --locked --bins failed"
    "$CLUSTER_DIR/build-image.sh" --skip-cargo || die "build-image.sh failed"
else
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE does not exist; run without --skip-build"
fi
[ -x "$LEASEHOLD_BIN" ] || die "no client at $LEASEHOLD_BIN (run without --skip-build)"
[ -x "$CHAOS_BIN" ] || die "no chaos runner at $CHAOS_BIN (run without --skip-build)"

# Power loss: a lazy filesystem per node, mounted on the host (root and
# /dev/fuse needed; the containers need nothing) and bound in as /data.
LAZYFS_BIN="$TARGET_DIR/release/leasehold-lazyfs"
if [ "$power_loss" = auto ]; then
    if [ ! -e /dev/fuse ]; then
        power_loss=0; log "no /dev/fuse: power-loss faults will be reported as unsupported"
    elif [ "$(id -u)" != 0 ]; then
        power_loss=0; log "not root: the lazy filesystems cannot be mounted; power-loss faults will be reported as unsupported"
    elif [ ! -x "$LAZYFS_BIN" ]; then
        power_loss=0; log "no $LAZYFS_BIN (run without --skip-build): power-loss faults will be reported as unsupported"
    else
        power_loss=1
    fi
fi
export CHAOS_POWER_LOSS="$power_loss"
[ "$power_loss" = 0 ] || log "power-loss faults on: each node's /data is a lazy filesystem under $LEASEHOLD_CHAOS_DIR/nodeN"

# The image says whether it carries libfaketime; without it, preload
# nothing (ld.so would complain on every process start) and the backend
# reports clock offsets as unsupported.
faketime=$(docker image inspect -f '{{index .Config.Labels "leasehold.faketime"}}' "$IMAGE" 2>/dev/null || true)
[ "$faketime" != "<no value>" ] || faketime=""
export LEASEHOLD_FAKETIME_PRELOAD="$faketime"
if [ -n "$faketime" ]; then
    log "the image has libfaketime ($faketime): clock offsets are available"
else
    log "the image has no libfaketime: clock-offset faults will be reported as unsupported"
fi

# ---- helpers -------------------------------------------------------------
# reset_clocks: every node's clock spec back to no offset, written atomically
# (libfaketime exits a process whose spec it cannot parse).
reset_clocks() {
    local n dir
    for n in "${NODES[@]}"; do
        dir="$LEASEHOLD_CHAOS_DIR/$n"
        mkdir -p "$dir" || die "cannot create $dir"
        if ! { printf '+0\n' >"$dir/.spec.tmp" && mv -f "$dir/.spec.tmp" "$dir/spec"; }; then
            die "cannot write $dir/spec"
        fi
    done
}

# The lazy filesystems' processes (power-loss mode).
LAZYFS_PIDS=()

# unmount_disks: stops every node's lazy filesystem (SIGTERM unmounts) and
# detaches any mount left behind.
unmount_disks() {
    local pid n
    for pid in ${LAZYFS_PIDS[@]+"${LAZYFS_PIDS[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${LAZYFS_PIDS[@]+"${LAZYFS_PIDS[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
    LAZYFS_PIDS=()
    for n in "${NODES[@]}"; do
        "$LAZYFS_BIN" unmount "$LEASEHOLD_CHAOS_DIR/$n/data" >/dev/null 2>&1 || true
    done
}

# mount_disks: a new, empty lazy filesystem per node: backing directory
# nodeN/disk, mounted at nodeN/data (what the override binds to /data),
# control socket nodeN/lazyfs.sock.
mount_disks() {
    local n dir i
    unmount_disks
    for n in "${NODES[@]}"; do
        dir="$LEASEHOLD_CHAOS_DIR/$n"
        rm -rf "$dir/disk" || die "cannot delete $dir/disk"
        mkdir -p "$dir/disk" "$dir/data" || die "cannot create $dir/disk and $dir/data"
        "$LAZYFS_BIN" mount --backing "$dir/disk" --mountpoint "$dir/data" \
            --control "$dir/$LAZYFS_SOCKET_NAME" --no-backing-sync \
            >"$dir/lazyfs.out" 2>"$dir/lazyfs.log" &
        LAZYFS_PIDS+=($!)
        for i in $(seq 1 150); do
            grep -qx ready "$dir/lazyfs.out" 2>/dev/null && break
            kill -0 "${LAZYFS_PIDS[-1]}" 2>/dev/null || break
            sleep 0.1
        done
        grep -qx ready "$dir/lazyfs.out" 2>/dev/null ||
            die "the lazy filesystem at $dir/data did not come up: $(tail -5 "$dir/lazyfs.log" 2>/dev/null)"
    done
    log "lazy filesystems mounted at $LEASEHOLD_CHAOS_DIR/node{1,2,3}/data"
}
LAZYFS_SOCKET_NAME=lazyfs.sock

# fresh_cluster: down with volumes, clocks reset, (power loss: fresh lazy
# filesystems), up with the overrides, and wait until healthy with a leader.
fresh_cluster() {
    log "starting a fresh cluster (down -v, then up with docker-compose.chaos.yml$([ "$CHAOS_POWER_LOSS" = 0 ] || echo " and docker-compose.powerloss.yml")$([ "$LEASEHOLD_TLS" != 1 ] || echo " and docker-compose.tls.yml"))"
    chaos_compose down -v --remove-orphans >&2 || die "docker-compose down failed"
    reset_clocks
    [ "$CHAOS_POWER_LOSS" = 0 ] || mount_disks
    chaos_compose up -d >&2 || die "docker-compose up failed"
    local leader
    leader=$(wait_cluster_ready "$ready_timeout") || {
        dump_cluster
        die "the cluster did not become ready"
    }
    log "cluster ready; leader is node $leader"
}

dump_cluster() {
    log "---- docker-compose ps ----"
    chaos_compose ps >&2 || true
    log "---- docker-compose logs (last 40 lines per node) ----"
    chaos_compose logs --no-color --tail 40 >&2 || true
}

# save_logs DIR: each node's docker log (what is left of it) into DIR/logs.
save_logs() {
    local dir="$1/logs" n
    mkdir -p "$dir"
    for n in "${NODES[@]}"; do
        docker logs --timestamps "$(container_of "$n")" >"$dir/$n.log" 2>&1 || true
    done
}

results=()
failed=0

# run_chaos NAME OUT EXPECT ARGS...: runs leasehold-chaos; EXPECT says what
# exit 0 means ("no anomalies" or "anomalies found as expected").
run_chaos() {
    local name=$1 out=$2 expect=$3 rc=0 t0 secs verdict
    shift 3
    mkdir -p "$out"
    log "$name: $CHAOS_BIN $*"
    t0=$(date +%s)
    "$CHAOS_BIN" "$@" || rc=$?
    secs=$(( $(date +%s) - t0 ))
    save_logs "$out"
    case "$rc" in
        0) verdict="PASSED ($expect)" ;;
        1) verdict="FAILED (the checker's verdict was not $expect)" ;;
        2) verdict="FAILED (usage or setup error)" ;;
        *) verdict="FAILED (leasehold-chaos exited $rc)" ;;
    esac
    [ "$rc" = 0 ] || failed=1
    results+=("$name: $verdict after ${secs}s; report in $out")
    log "$name: $verdict"
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    [ "$rc" = 0 ] || [ ${#results[@]} -gt 0 ] || dump_cluster
    log "taking the cluster down"
    chaos_compose down -v --remove-orphans >/dev/null 2>&1 || log "warning: docker-compose down failed"
    [ "$CHAOS_POWER_LOSS" = 0 ] || unmount_disks
    # No private key outlives the run.
    [ "$LEASEHOLD_TLS" != 1 ] || rm -rf "$LEASEHOLD_TLS_DIR" || log "warning: cannot remove $LEASEHOLD_TLS_DIR"
    if [ ${#results[@]} -gt 0 ]; then
        printf '\nLeasehold docker chaos suite\n' >&2
        printf '  %s\n' "${results[@]}" >&2
    fi
    if [ "$rc" = 0 ] && [ "$failed" = 0 ]; then
        log "CHAOS SUITE PASSED (reports in $OUT_DIR)"
        exit 0
    fi
    [ "$rc" != 0 ] || rc=1
    log "CHAOS SUITE FAILED (reports in $OUT_DIR)"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
log "reports go to $OUT_DIR"

# ---- 2-3. the chaos run ----------------------------------------------------
if [ "$main_run" = 1 ]; then
    fresh_cluster
    run_chaos "chaos run (${duration}s)" "$OUT_DIR" "no anomalies" \
        run --backend docker --duration "$duration" --out "$OUT_DIR" ${seed_args[@]+"${seed_args[@]}"} \
        ${tls_args[@]+"${tls_args[@]}"}
fi

# ---- 4. the negative control -------------------------------------------
if [ "$negative" = 1 ]; then
    fresh_cluster
    run_chaos "negative control (no fencing, client pauses)" "$OUT_DIR/negative" "anomalies found" \
        run --backend docker --duration 40 --no-fencing --faults pause-client --min-rate 50 \
        --out "$OUT_DIR/negative" --expect-anomalies ${seed_args[@]+"${seed_args[@]}"} \
        ${tls_args[@]+"${tls_args[@]}"}
fi
# ---- 5. finish (trap) ------------------------------------------------------
