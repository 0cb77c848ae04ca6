# Shared helpers for the cluster/*.sh scripts. Source it; do not run it.
# shellcheck shell=bash
# The variables are for the scripts that source this file.
# shellcheck disable=SC2034

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/.." && pwd)"
COMPOSE_FILE="$CLUSTER_DIR/docker-compose.yml"
# The chaos suite's override (restart "no", libfaketime, clock spec mounts);
# used only by chaos.sh, on top of COMPOSE_FILE.
CHAOS_COMPOSE_FILE="$CLUSTER_DIR/docker-compose.chaos.yml"
# The power-loss override (each node's /data bound to a lazy filesystem that
# chaos.sh mounts on the host); chaos_compose adds it when CHAOS_POWER_LOSS=1.
POWER_LOSS_COMPOSE_FILE="$CLUSTER_DIR/docker-compose.powerloss.yml"
CHAOS_POWER_LOSS="${CHAOS_POWER_LOSS:-0}"
# The TLS override (a `certs` service making the PKI, and nodes serving
# TLS with client certificates, tokens and rules); compose and
# chaos_compose add it when LEASEHOLD_TLS=1 (up.sh --tls, chaos.sh --tls,
# or set by the caller, e.g. `LEASEHOLD_TLS=1 cluster/down.sh`).
TLS_COMPOSE_FILE="$CLUSTER_DIR/docker-compose.tls.yml"
LEASEHOLD_TLS="${LEASEHOLD_TLS:-0}"
# Where build-image.sh puts libfaketime inside the image (when it has one).
FAKETIME_LIB=/usr/lib/faketime/libfaketime.so.1
PROJECT=leasehold
IMAGE=leasehold:local
NODES=(node1 node2 node3)
# Host ports published by docker-compose.yml (127.0.0.1 only).
declare -A HOST_PORT=([node1]=7071 [node2]=7072 [node3]=7073)
declare -A NODE_IP=([node1]=172.28.0.11 [node2]=172.28.0.12 [node3]=172.28.0.13)
ENDPOINTS=127.0.0.1:7071,127.0.0.1:7072,127.0.0.1:7073

# The release binary: put into the image and used on the host as the client.
# Follows CARGO_TARGET_DIR; LEASEHOLD_BIN overrides it (with --skip-cargo).
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO_ROOT/$TARGET_DIR" ;; esac
LEASEHOLD_BIN="${LEASEHOLD_BIN:-$TARGET_DIR/release/leasehold}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] FAIL: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# docker-compose (v1) if present, else the `docker compose` plugin, with the
# compose files listed before a `--`, e.g. `compose_with a.yml b.yml -- ps`.
compose_with() {
    local files=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        files+=(-f "$1")
        shift
    done
    [ $# -gt 0 ] && shift
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$PROJECT" "${files[@]}" "$@"
    elif docker compose version >/dev/null 2>&1; then
        docker compose -p "$PROJECT" "${files[@]}" "$@"
    else
        die "neither docker-compose nor 'docker compose' is available"
    fi
}

# The cluster as users run it (+ the TLS override when LEASEHOLD_TLS=1; the
# override is always the last file, so that its settings win).
compose() {
    local files=("$COMPOSE_FILE")
    [ "$LEASEHOLD_TLS" != 1 ] || files+=("$TLS_COMPOSE_FILE")
    compose_with "${files[@]}" -- "$@"
}

# The cluster as chaos runs start it (docker-compose.yml + the chaos override,
# + the power-loss override when CHAOS_POWER_LOSS=1, + the TLS override when
# LEASEHOLD_TLS=1).
chaos_compose() {
    local files=("$COMPOSE_FILE" "$CHAOS_COMPOSE_FILE")
    [ "$CHAOS_POWER_LOSS" != 1 ] || files+=("$POWER_LOSS_COMPOSE_FILE")
    [ "$LEASEHOLD_TLS" != 1 ] || files+=("$TLS_COMPOSE_FILE")
    compose_with "${files[@]}" -- "$@"
}

# enable_tls: LEASEHOLD_TLS=1, and what the TLS override and the host-side
# client need, exported:
# - LEASEHOLD_TLS_DIR, the PKI directory the `certs` service writes
#   (default cluster/.tls), created now as the caller: if docker created
#   the missing bind-mount source it would belong to root;
# - LEASEHOLD_TLS_UID/GID, the caller's ids, which the `certs` service runs
#   as, so that the files it writes (keys 0600) are the caller's to read
#   and to delete;
# - LEASEHOLD_CACERT/CERT/KEY for `lh` (the CLI reads them as --cacert,
#   --cert, --key): the `admin` client of the leasehold:admins group.
#   The chaos runner reads its own pair (chaos.crt) from cluster/.tls.
enable_tls() {
    LEASEHOLD_TLS=1
    export LEASEHOLD_TLS
    export LEASEHOLD_TLS_DIR="${LEASEHOLD_TLS_DIR:-$CLUSTER_DIR/.tls}"
    case "$LEASEHOLD_TLS_DIR" in /*) ;; *) LEASEHOLD_TLS_DIR="$PWD/$LEASEHOLD_TLS_DIR" ;; esac
    mkdir -p "$LEASEHOLD_TLS_DIR" || die "cannot create $LEASEHOLD_TLS_DIR"
    LEASEHOLD_TLS_UID=$(id -u)
    LEASEHOLD_TLS_GID=$(id -g)
    export LEASEHOLD_TLS_UID LEASEHOLD_TLS_GID
    export LEASEHOLD_CACERT="$LEASEHOLD_TLS_DIR/ca.crt"
    export LEASEHOLD_CERT="$LEASEHOLD_TLS_DIR/admin.crt"
    export LEASEHOLD_KEY="$LEASEHOLD_TLS_DIR/admin.key"
}
[ "$LEASEHOLD_TLS" != 1 ] || enable_tls

container_of() { echo "leasehold-$1"; }

# The client, talking to the published host ports.
lh() { "$LEASEHOLD_BIN" "$@"; }

# Wall-clock milliseconds since the Unix epoch (for the reported timings).
now_ms() { date +%s%3N; }

# wait_cluster_ready TIMEOUT_S: waits until all three containers run and are
# healthy and the host client sees a leader and three members; logs each
# change of state. Returns 1 (after logging why) when a container is gone or
# the time is up; prints the leader's id on success.
wait_cluster_ready() {
    local timeout_s=$1 deadline last="" now n s js leader members all_healthy
    local states=()
    deadline=$(( $(date +%s) + timeout_s ))
    while :; do
        states=()
        all_healthy=1
        for n in "${NODES[@]}"; do
            s=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
                "$(container_of "$n")" 2>/dev/null || echo missing)
            states+=("$n=$s")
            [ "$s" = running/healthy ] || all_healthy=0
        done
        leader=0 members=0
        if js=$(lh --endpoints "$ENDPOINTS" --timeout 2 status -o json 2>/dev/null); then
            leader=$(jq -r '.leaderId' <<<"$js")
            members=$(jq -r '.members | length' <<<"$js")
        fi
        now="${states[*]} leader=$leader members=$members"
        [ "$now" != "$last" ] && log "  $now" && last=$now
        if [ "$all_healthy" = 1 ] && [ "$leader" != 0 ] && [ "$members" = 3 ]; then
            echo "$leader"
            return 0
        fi
        for s in "${states[@]}"; do
            case "${s#*=}" in
                exited/*|dead/*|missing)
                    log "container $(container_of "${s%%=*}") is not running ($s)"
                    return 1 ;;
            esac
        done
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "cluster not ready after ${timeout_s}s ($now)"
            return 1
        fi
        sleep 0.5
    done
}
