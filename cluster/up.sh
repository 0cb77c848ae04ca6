#!/usr/bin/env bash
# Brings the three-node cluster up and waits until it is usable:
#   builds leasehold:local (cluster/build-image.sh), docker-compose up -d, then
#   waits until all three containers are healthy and the host client sees a
#   leader and three members.
# Usage: cluster/up.sh [--no-build] [--tls] [build-image.sh flags, e.g. --skip-cargo]
#   --no-build  use the existing leasehold:local image and host binary
#               (--skip-build, as chaos.sh spells it, is the same)
#   --tls  the TLS variant (docker-compose.tls.yml): a `certs` container makes
#          the PKI in cluster/.tls first (kept across ups; down.sh deletes
#          it), nodes serve TLS, and the host client uses .tls/admin.crt
# Env:   LEASEHOLD_UP_TIMEOUT  seconds to wait for the cluster (default 90)
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

build=1
build_args=()
for arg in "$@"; do
    case "$arg" in
        --no-build|--skip-build) build=0 ;;
        --tls) enable_tls ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) build_args+=("$arg") ;;
    esac
done
timeout_s="${LEASEHOLD_UP_TIMEOUT:-90}"

t0=$(now_ms)
if [ "$build" = 1 ]; then
    "$CLUSTER_DIR/build-image.sh" ${build_args[@]+"${build_args[@]}"}
else
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE does not exist; run without --no-build"
fi
[ -x "$LEASEHOLD_BIN" ] || die "no host client at $LEASEHOLD_BIN (run cluster/build-image.sh)"
t_built=$(now_ms)

log "starting containers (docker-compose up -d)"
compose up -d --remove-orphans || die "docker-compose up failed"
t_started=$(now_ms)

fail() {
    log "FAIL: $*"
    log "---- docker-compose ps ----"
    compose ps >&2 || true
    log "---- docker-compose logs (last 60 lines per node) ----"
    compose logs --no-color --tail 60 >&2 || true
    exit 1
}

log "waiting up to ${timeout_s}s for three healthy nodes and a leader"
leader=$(wait_cluster_ready "$timeout_s") || fail "the cluster did not become ready"
t_ready=$(now_ms)

lh --endpoints "$ENDPOINTS" status >&2
log "cluster ready: leader is node $leader; $(( t_ready - t_started ))ms from docker-compose up to ready," \
    "$(( t_ready - t0 ))ms since up.sh started (build $(( t_built - t0 ))ms)"
if [ "$LEASEHOLD_TLS" = 1 ]; then
    cat >&2 <<MSG
  client:  $LEASEHOLD_BIN --endpoints $ENDPOINTS --cacert $LEASEHOLD_CACERT \\
             --cert $LEASEHOLD_CERT --key $LEASEHOLD_KEY status
  kubectl: kubectl --kubeconfig $LEASEHOLD_TLS_DIR/kubeconfig-kubectl.yaml get leases -A
  down:    $CLUSTER_DIR/down.sh (deletes $LEASEHOLD_TLS_DIR)
MSG
else
    cat >&2 <<MSG
  client:  $LEASEHOLD_BIN --endpoints $ENDPOINTS status
  down:    $CLUSTER_DIR/down.sh
MSG
fi
# Machine-readable figures for callers (smoke.sh).
echo "UP_BUILD_MS=$(( t_built - t0 )) UP_READY_MS=$(( t_ready - t_started )) UP_TOTAL_MS=$(( t_ready - t0 )) LEADER=$leader"
