# Shared helpers for the cluster/*.sh scripts. Source it; do not run it.
# shellcheck shell=bash

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/.." && pwd)"
COMPOSE_FILE="$CLUSTER_DIR/docker-compose.yml"
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

# docker-compose (v1) if present, else the `docker compose` plugin.
compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
    elif docker compose version >/dev/null 2>&1; then
        docker compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
    else
        die "neither docker-compose nor 'docker compose' is available"
    fi
}

container_of() { echo "leasehold-$1"; }

# The client, talking to the published host ports.
lh() { "$LEASEHOLD_BIN" "$@"; }

# Wall-clock milliseconds since the Unix epoch (for the reported timings).
now_ms() { date +%s%3N; }
