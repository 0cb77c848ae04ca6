#!/usr/bin/env bash
# Smoke test of the dockerised three-node cluster:
#   up.sh; acquire a lease through node1; docker kill the leader's container;
#   check that a new leader is elected and the lease keeps its holder and
#   fencing token; docker start the container; check that it rejoins (three
#   members, its applied index catches up); down.sh. Exits non-zero with a
#   message on the first failure and prints a summary with timings.
# Usage: cluster/smoke.sh [--keep] [--tls] [up.sh flags, e.g. --no-build, --skip-cargo]
#   --keep  leave the cluster running afterwards (default: down.sh -v)
#   --tls   the TLS cluster (up.sh --tls); this script's client calls then
#           use cluster/.tls/admin.crt, and down.sh deletes cluster/.tls
# Env:    SMOKE_TIMEOUT  seconds allowed for each wait (default 30)
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

keep=0
up_args=()
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        # enable_tls exports LEASEHOLD_TLS=1: up.sh and down.sh inherit it.
        --tls) enable_tls ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) up_args+=("$arg") ;;
    esac
done
wait_s="${SMOKE_TIMEOUT:-30}"
LEASE=smoke/lock
HOLDER=smoke-holder

finish() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        log "---- docker-compose ps ----"
        compose ps >&2 || true
        log "---- docker-compose logs (last 40 lines per node) ----"
        compose logs --no-color --tail 40 >&2 || true
    fi
    if [ "$keep" = 1 ]; then
        log "leaving the cluster running (--keep); take it down with $CLUSTER_DIR/down.sh"
    else
        "$CLUSTER_DIR/down.sh" >/dev/null 2>&1 || log "warning: down.sh failed"
    fi
    if [ "$rc" = 0 ]; then log "SMOKE TEST PASSED"; else log "SMOKE TEST FAILED (exit $rc)"; fi
    exit "$rc"
}
trap finish EXIT

# status_of PORT: the node's status as JSON, or nothing if it does not answer.
status_of() { lh --endpoints "127.0.0.1:$1" --timeout 1 status -o json 2>/dev/null || true; }
jfield() { jq -r "$1" <<<"$2"; }

# ---- 1. up -------------------------------------------------------------
t0=$(now_ms)
up_out=$("$CLUSTER_DIR/up.sh" ${up_args[@]+"${up_args[@]}"}) || die "up.sh failed"
eval "$(grep '^UP_' <<<"$up_out" | tail -1 | tr ' ' '\n' | grep -E '^UP_[A-Z_]+=[0-9]+$')"
log "cluster up: ${UP_READY_MS}ms after docker-compose up; ${UP_TOTAL_MS}ms for all of up.sh (build ${UP_BUILD_MS}ms)"

# ---- 2. acquire through node1 ------------------------------------------
out=$(lh --endpoints 127.0.0.1:7071 acquire "$LEASE" --holder "$HOLDER" --duration 300 -o json) \
    || die "acquire $LEASE through node1 (127.0.0.1:7071) failed"
token=$(jfield '.status.fencingToken' "$out")
[ "$(jfield '.spec.holderIdentity' "$out")" = "$HOLDER" ] || die "acquire returned holder $(jfield '.spec.holderIdentity' "$out")"
[ -n "$token" ] && [ "$token" != null ] && [ "$token" -gt 0 ] || die "acquire returned no fencing token: $out"
log "acquired $LEASE holder=$HOLDER token=$token through node1"

st=$(lh --endpoints "$ENDPOINTS" status -o json) || die "status failed"
old_leader=$(jfield '.leaderId' "$st")
old_term=$(jfield '.term' "$st")
[ "$old_leader" -ge 1 ] && [ "$old_leader" -le 3 ] || die "unexpected leader id $old_leader"
victim="node$old_leader"
survivor_ports=()
for n in "${NODES[@]}"; do [ "$n" = "$victim" ] || survivor_ports+=("${HOST_PORT[$n]}"); done
survivors=$(printf '127.0.0.1:%s,' "${survivor_ports[@]}"); survivors=${survivors%,}

# ---- 3. kill the leader ------------------------------------------------
log "docker kill $(container_of "$victim") (leader, term $old_term)"
docker kill "$(container_of "$victim")" >/dev/null || die "docker kill failed"
t_kill=$(now_ms)

new_leader=0
deadline=$(( t_kill + wait_s * 1000 ))
while :; do
    for p in "${survivor_ports[@]}"; do
        s=$(status_of "$p")
        [ -n "$s" ] || continue
        l=$(jfield '.leaderId' "$s")
        if [ "$l" != 0 ] && [ "$l" != "$old_leader" ]; then
            # Count it only once the new leader itself says it leads.
            ls=$(status_of "${HOST_PORT[node$l]}")
            if [ -n "$ls" ] && [ "$(jfield '.state' "$ls")" = LEADER ]; then
                new_leader=$l
                new_term=$(jfield '.term' "$ls")
                break 2
            fi
        fi
    done
    [ "$(now_ms)" -lt "$deadline" ] || die "no new leader within ${wait_s}s of killing node $old_leader"
    sleep 0.05
done
t_leader=$(now_ms)
leader_ms=$(( t_leader - t_kill ))
log "new leader: node $new_leader (term $new_term), ${leader_ms}ms after docker kill"

# First write through the survivors: a fresh lease, grantable at once.
while ! lh --endpoints "$survivors" --timeout 2 acquire smoke/probe --holder probe --duration 30 >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || die "no write succeeded within ${wait_s}s of killing node $old_leader"
    sleep 0.05
done
t_write=$(now_ms)
write_ms=$(( t_write - t_kill ))
log "first write committed ${write_ms}ms after docker kill"

# ---- 4. the lease kept its holder and token ----------------------------
for p in "${survivor_ports[@]}"; do
    g=$(lh --endpoints "127.0.0.1:$p" get "$LEASE" -o json) || die "get $LEASE through 127.0.0.1:$p failed"
    [ "$(jfield '.spec.holderIdentity' "$g")" = "$HOLDER" ] \
        || die "after failover $LEASE is held by '$(jfield '.spec.holderIdentity' "$g")' (node on port $p), expected $HOLDER"
    [ "$(jfield '.status.fencingToken' "$g")" = "$token" ] \
        || die "after failover $LEASE has token $(jfield '.status.fencingToken' "$g") (node on port $p), expected $token"
done
r=$(lh --endpoints "$survivors" renew "$LEASE" --holder "$HOLDER" --token "$token" -o json) \
    || die "the holder could not renew $LEASE with token $token after failover"
[ "$(jfield '.status.fencingToken' "$r")" = "$token" ] || die "renew changed the token to $(jfield '.status.fencingToken' "$r")"
set +e
lh --endpoints "$survivors" acquire "$LEASE" --holder intruder --duration 10 >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || die "acquire by another holder after failover exited $rc, expected 1 (held by another)"
log "lease kept holder=$HOLDER token=$token; renew ok; another holder refused"

# ---- 5. restart the killed node and check it rejoins -------------------
log "docker start $(container_of "$victim")"
docker start "$(container_of "$victim")" >/dev/null || die "docker start failed"
t_start=$(now_ms)
# Give the cluster something to replicate while the node is catching up.
lh --endpoints "$survivors" renew "$LEASE" --holder "$HOLDER" --token "$token" >/dev/null \
    || die "renew after restarting node $old_leader failed"
# Only the leader knows how far each member got (followers report
# matchedIndex 0), so ask it directly.
lport=${HOST_PORT[node$new_leader]}
ls=$(lh --endpoints "127.0.0.1:$lport" status -o json) || die "status of the leader (node $new_leader) failed"
[ "$(jfield '.state' "$ls")" = LEADER ] || die "node $new_leader is no longer the leader: $ls"
target=$(jfield '.commitIndex' "$ls")
vport=${HOST_PORT[$victim]}
deadline=$(( t_start + wait_s * 1000 ))
while :; do
    s=$(status_of "$vport")
    if [ -n "$s" ]; then
        members=$(jfield '.members | length' "$s")
        applied=$(jfield '.appliedIndex' "$s")
        l=$(jfield '.leaderId' "$s")
        if [ "$members" = 3 ] && [ "$l" != 0 ] && [ "$l" != "$old_leader" ] && [ "$applied" -ge "$target" ]; then
            break
        fi
    fi
    [ "$(now_ms)" -lt "$deadline" ] \
        || die "node $old_leader did not rejoin within ${wait_s}s (wanted 3 members, a leader and applied >= $target; last status: ${s:-none})"
    sleep 0.1
done
t_rejoin=$(now_ms)
rejoin_ms=$(( t_rejoin - t_start ))
log "node $old_leader rejoined: 3 members, leader $l, applied $applied >= $target, ${rejoin_ms}ms after docker start"

# The leader replicates to it, and it serves the lease from its own state.
ls=$(lh --endpoints "127.0.0.1:$lport" status -o json) || die "status of the leader (node $new_leader) failed"
matched=$(jq -r --argjson id "$old_leader" '.members[] | select(.id == $id) | .matchedIndex' <<<"$ls")
[ -n "$matched" ] && [ "$matched" -ge "$target" ] || die "leader reports matchedIndex ${matched:-none} for node $old_leader, expected >= $target"
g=$(lh --endpoints "127.0.0.1:$vport" get "$LEASE" --stale -o json) || die "stale get through the restarted node failed"
[ "$(jfield '.spec.holderIdentity' "$g")" = "$HOLDER" ] && [ "$(jfield '.status.fencingToken' "$g")" = "$token" ] \
    || die "restarted node serves $LEASE as holder=$(jfield '.spec.holderIdentity' "$g") token=$(jfield '.status.fencingToken' "$g")"
health=""
while [ "$health" != healthy ]; do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$(container_of "$victim")")
    [ "$(now_ms)" -lt "$deadline" ] || die "container $(container_of "$victim") not healthy within ${wait_s}s (it is $health)"
    [ "$health" = healthy ] || sleep 0.5
done
t_healthy=$(now_ms)
lh --endpoints "127.0.0.1:$vport" status >&2

# ---- summary -----------------------------------------------------------
cat <<SUMMARY

Leasehold docker smoke test: PASSED
  cluster ready after docker-compose up   ${UP_READY_MS} ms  (all of up.sh: ${UP_TOTAL_MS} ms, of which build ${UP_BUILD_MS} ms)
  killed leader                           node $old_leader (term $old_term)
  new leader after docker kill            ${leader_ms} ms  (node $new_leader, term $new_term)
  first write after docker kill           ${write_ms} ms
  lease $LEASE                        holder=$HOLDER token=$token kept across failover
  node $old_leader rejoined after docker start     ${rejoin_ms} ms  (applied >= $target, matched $matched); healthy after $(( t_healthy - t_start )) ms
  total                                   $(( $(now_ms) - t0 )) ms
SUMMARY
