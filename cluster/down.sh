#!/usr/bin/env bash
# Stops and removes the cluster's containers and network, and its data volumes
# unless --keep-data is given (the next up.sh then recovers from them).
# The leasehold:local image is kept.
# Usage: cluster/down.sh [--keep-data]
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

volumes=(-v)
for arg in "$@"; do
    case "$arg" in
        --keep-data) volumes=() ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

if [ ${#volumes[@]} -eq 0 ]; then
    log "stopping the cluster (keeping the data volumes)"
else
    log "stopping the cluster and removing its data volumes"
fi
compose down --remove-orphans ${volumes[@]+"${volumes[@]}"} || die "docker-compose down failed"
log "cluster is down"
