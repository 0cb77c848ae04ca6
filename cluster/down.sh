#!/usr/bin/env bash
# Stops and removes the cluster's containers and network, and its data volumes
# and the TLS directory (cluster/.tls, or $LEASEHOLD_TLS_DIR: CAs, keys,
# tokens) unless --keep-data is given (the next up.sh then recovers from
# them, with the same CAs). The leasehold:local image is kept.
# Usage: cluster/down.sh [--keep-data]
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

volumes=(-v)
for arg in "$@"; do
    case "$arg" in
        --keep-data) volumes=() ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

if [ ${#volumes[@]} -eq 0 ]; then
    log "stopping the cluster (keeping the data volumes)"
else
    log "stopping the cluster and removing its data volumes"
fi
# --remove-orphans also removes the `certs` container of a TLS cluster when
# LEASEHOLD_TLS is not set here.
compose down --remove-orphans ${volumes[@]+"${volumes[@]}"} || die "docker-compose down failed"
tls_dir="${LEASEHOLD_TLS_DIR:-$CLUSTER_DIR/.tls}"
if [ ${#volumes[@]} -gt 0 ] && [ -e "$tls_dir" ]; then
    # No private key outlives the cluster. Files written by a `certs`
    # container that ran as root (docker-compose without lib.sh) can only
    # be deleted by root.
    if rm -rf "$tls_dir"; then
        log "removed $tls_dir"
    else
        log "warning: cannot remove $tls_dir (written as root? sudo rm -rf $tls_dir)"
    fi
fi
log "cluster is down"
