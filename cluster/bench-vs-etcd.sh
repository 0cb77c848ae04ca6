#!/usr/bin/env bash
# Leasehold and etcd side by side on this machine: three members of each on
# loopback (default settings, fsync on), the same workloads against each,
# alternating (leasehold, etcd, leasehold, etcd, ...) so that drift on a
# shared machine hits both, then the table with ratios ours / etcd.
#
# Usage: cluster/bench-vs-etcd.sh [options]
#   --long              30 s runs, 3 repeats, clients "1 16 64 256" (about 40 min)
#   --duration S        measured seconds per run (default 8)
#   --warmup S          warmup seconds per run (default 2)
#   --repeats N         runs of each system per configuration (default 1)
#   --clients "A B"     concurrencies (default "1 16 64")
#   --workloads "W..."  load workloads (default "renew acquire mixed keepalive")
#   --no-watch          skip the watch run (16 clients, 4 watchers)
#   --no-failover       skip the failover run (16 clients, leader SIGKILLed)
#   --no-restart        skip the rolling-restart run (16 clients, every server
#                       SIGTERMed and started again in turn, the leader last)
#   --no-build          use the binaries built last time (target/bench/bin)
#   --plots DIR         also draw the SVG charts into DIR (e.g. docs)
#   --scale N           then run the `scale` workload on the Leasehold cluster: load N
#                       leases, renew them, kill and restart a follower; then
#                       renew with and without 8 selector scans of them
#   --scale-minutes M   minutes of renewals in the scale run (default 10)
#   --tls               Leasehold with TLS, a client certificate and authorization
#                       rules (from `leasehold certs init` into target/bench/tls);
#                       etcd stays plaintext (the bench's etcd client has no
#                       TLS), so the ratios carry the whole cost of both
#   --leasehold-args A  extra `leasehold serve` flags, e.g.
#                       "--election-timeout-min-ms 150 --election-timeout-max-ms 300"
# Results: target/bench/results/<time>/ (one JSON report per run, table.md,
# the servers' logs); data directories under target/bench/data/ (wiped at
# start). Default total run time: about 6 minutes plus the build.
# Needs: a Rust toolchain; installs Debian's etcd-server and
# protobuf-compiler (etcd-client's build needs protoc) if missing (root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

duration=8
warmup=2
repeats=1
clients="1 16 64"
workloads="renew acquire mixed keepalive"
watch=1
failover=1
restart=1
build=1
plots_dir=""
leasehold_args=""
scale=0
scale_minutes=10
tls=0
while [ $# -gt 0 ]; do
    case "$1" in
        --long) duration=30; repeats=3; clients="1 16 64 256" ;;
        --duration) duration="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --repeats) repeats="$2"; shift ;;
        --clients) clients="$2"; shift ;;
        --workloads) workloads="$2"; shift ;;
        --no-watch) watch=0 ;;
        --no-failover) failover=0 ;;
        --no-restart) restart=0 ;;
        --no-build) build=0 ;;
        --plots) plots_dir="$2"; shift ;;
        --leasehold-args) leasehold_args="$2"; shift ;;
        --scale) scale="$2"; shift ;;
        --scale-minutes) scale_minutes="$2"; shift ;;
        --tls) tls=1 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------
need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
if [ "$build" = 1 ] && ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
    need_pkgs+=(protobuf-compiler)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need_pkgs[*]}: install them (apt-get install ${need_pkgs[*]}) or run as root"
    say "installing ${need_pkgs[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# Debian's package may start a system etcd on the default ports; ours use
# other ports and never touch it.

BENCH=$REPO/target/bench
# The server, and the load generator (its own package, with the etcd and
# plots features).
BIN=$BENCH/bin/leasehold
BENCH_BIN=$BENCH/bin/leasehold-bench
if [ "$build" = 1 ]; then
    say "cargo build --release -p leasehold -p leasehold-bench --features leasehold-bench/etcd,leasehold-bench/plots"
    cargo build --release --locked -p leasehold -p leasehold-bench \
        --features leasehold-bench/etcd,leasehold-bench/plots
    # Private copies of one build: other builds (cluster/up.sh, tests)
    # replace target/release/leasehold-bench with binaries without the etcd
    # feature, and target/release/leasehold with other versions.
    mkdir -p "$BENCH/bin"
    for b in "$BIN" "$BENCH_BIN"; do
        cp "target/release/$(basename "$b")" "$b.tmp" && mv "$b.tmp" "$b"
    done
fi
for b in "$BIN" "$BENCH_BIN"; do
    [ -x "$b" ] || die "no $b: run without --no-build"
done
"$BENCH_BIN" renew --target etcd --help >/dev/null 2>&1 || die "$BENCH_BIN cannot run"

# --- ports ---------------------------------------------------------------
LH_PORTS=(17171 17172 17173)
ETCD_CLIENT=(12379 12479 12579)
ETCD_PEER=(12380 12480 12580)
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "${LH_PORTS[@]}" "${ETCD_CLIENT[@]}" "${ETCD_PEER[@]}"; do
    # A server of a run that just ended may still be closing its sockets.
    for _ in 1 2 3 4 5 6 7 8 9 10; do port_taken "$p" || break; sleep 0.5; done
    port_taken "$p" && die "port $p on 127.0.0.1 is in use (an earlier run still going?)"
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$BENCH/results/$stamp
DATA=$BENCH/data
rm -rf "$DATA"
mkdir -p "$RESULTS" "$DATA"

declare -A PID=()
cleanup() {
    local p
    for p in "${PID[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 1
    for p in "${PID[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in "${PID[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e "/proc/$p" ] || break; sleep 0.2; done
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$tls" = 1 ]; then
    # One node certificate (127.0.0.1) for the three nodes, the bench's
    # client certificate in group leasehold:admins, and the rules file:
    # the whole secured path. The CLI and the bench read the LEASEHOLD_*
    # variables (the bench ignores them for etcd).
    TLS_DIR=$BENCH/tls
    rm -rf "$TLS_DIR"
    "$BIN" certs init --dir "$TLS_DIR" --node 1 --client bench:leasehold:admins >/dev/null
    leasehold_args="$leasehold_args --cert-file $TLS_DIR/node-1.crt --key-file $TLS_DIR/node-1.key"
    leasehold_args="$leasehold_args --peer-trusted-ca-file $TLS_DIR/ca.crt --trusted-ca-file $TLS_DIR/client-ca.crt"
    leasehold_args="$leasehold_args --authorization-file $TLS_DIR/authz.yaml"
    export LEASEHOLD_CACERT=$TLS_DIR/ca.crt LEASEHOLD_CERT=$TLS_DIR/bench.crt LEASEHOLD_KEY=$TLS_DIR/bench.key
fi

LH_PEERS="1=127.0.0.1:${LH_PORTS[0]},2=127.0.0.1:${LH_PORTS[1]},3=127.0.0.1:${LH_PORTS[2]}"
LH_ENDPOINTS="127.0.0.1:${LH_PORTS[0]},127.0.0.1:${LH_PORTS[1]},127.0.0.1:${LH_PORTS[2]}"
ETCD_CLUSTER="e1=http://127.0.0.1:${ETCD_PEER[0]},e2=http://127.0.0.1:${ETCD_PEER[1]},e3=http://127.0.0.1:${ETCD_PEER[2]}"
ETCD_ENDPOINTS="127.0.0.1:${ETCD_CLIENT[0]},127.0.0.1:${ETCD_CLIENT[1]},127.0.0.1:${ETCD_CLIENT[2]}"

# The same command starts a node the first time and after a kill. Started
# processes are disowned: bash then reaps them itself (no zombies for
# `alive` to mistake for running servers) and does not announce a kill.
# Each server's command line, as an array in CMD (leasehold_args is a list
# of flags, split on spaces).
leasehold_cmd() {
    local i=$1 extra
    read -r -a extra <<<"$leasehold_args"
    CMD=("$BIN" serve --id "$i" --listen "127.0.0.1:${LH_PORTS[$((i - 1))]}"
        --data-dir "$DATA/leasehold-$i" --peers "$LH_PEERS" --hostname "bench-$i"
        ${extra[@]+"${extra[@]}"})
}
etcd_cmd() {
    local i=$1
    CMD=(etcd --name "e$i" --data-dir "$DATA/etcd-$i"
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT[$((i - 1))]}"
        --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT[$((i - 1))]}"
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER[$((i - 1))]}"
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER[$((i - 1))]}"
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new
        --initial-cluster-token leasehold-bench)
}
start_leasehold() {
    local i=$1
    leasehold_cmd "$i"
    "${CMD[@]}" >>"$RESULTS/leasehold-$i.log" 2>&1 &
    PID[lh$i]=$!
    disown "${PID[lh$i]}"
}
start_etcd() {
    local i=$1
    etcd_cmd "$i"
    "${CMD[@]}" >>"$RESULTS/etcd-$i.log" 2>&1 &
    PID[etcd$i]=$!
    disown "${PID[etcd$i]}"
}
# restart_scripts SYSTEM (leasehold|etcd): writes $RESULTS/start-SYSTEM-N.sh,
# the same command as start_SYSTEM N for the bench's --restart-cmd; each
# leaves its pid in restarted-SYSTEM-N.pid for the cleanup.
restart_scripts() {
    local sys=$1 i
    for i in 1 2 3; do
        "${sys}_cmd" "$i"
        {
            echo '#!/usr/bin/env bash'
            printf 'echo $$ >%q\n' "$RESULTS/restarted-$sys-$i.pid"
            printf 'exec'
            printf ' %q' "${CMD[@]}"
            printf ' >>%q 2>&1\n' "$RESULTS/$sys-$i.log"
        } >"$RESULTS/start-$sys-$i.sh"
    done
}
# Takes over the pids of the servers the bench restarted.
adopt_restarted() {
    local sys=$1 key=$2 i f
    for i in 1 2 3; do
        f=$RESULTS/restarted-$sys-$i.pid
        if [ -f "$f" ]; then
            PID[$key$i]=$(cat "$f")
            rm -f "$f"
        fi
    done
}
etcd_healthy() {
    local port=$1 reply
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
        printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3) 2>/dev/null) || return 1
    [[ "$reply" == *'"health":"true"'* ]]
}
wait_ready() {
    local deadline=$((SECONDS + 60)) i
    until "$BIN" --endpoints "$LH_ENDPOINTS" --timeout 2 health >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "leasehold has no leader after 60 s (logs in $RESULTS)"
        sleep 0.2
    done
    for i in 0 1 2; do
        until etcd_healthy "${ETCD_CLIENT[$i]}"; do
            [ $SECONDS -lt $deadline ] || die "etcd member $((i + 1)) not healthy after 60 s (logs in $RESULTS)"
            sleep 0.2
        done
    done
}
# Whether a process runs (a killed child stays a zombie until waited for).
alive() {
    local state
    state=$(awk -F') ' '{print substr($2, 1, 1)}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
# Starts again any member a failover run killed.
revive() {
    local i
    for i in 1 2 3; do
        if ! alive "${PID[lh$i]}"; then
            say "restarting leasehold node $i"
            start_leasehold "$i"
        fi
        if ! alive "${PID[etcd$i]}"; then
            say "restarting etcd member $i"
            start_etcd "$i"
        fi
    done
    wait_ready
}
pids_of() { echo "1=${PID[${1}1]},2=${PID[${1}2]},3=${PID[${1}3]}"; }

say "starting 3 leasehold nodes (ports ${LH_PORTS[*]}) and 3 etcd members (ports ${ETCD_CLIENT[*]})"
for i in 1 2 3; do start_leasehold "$i"; start_etcd "$i"; done
wait_ready

{
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "leasehold: $("$BIN" --version) ($(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "etcd: $(etcd --version | head -1)"
    echo "runs: ${duration} s measured after ${warmup} s warmup, ${repeats} repeat(s), clients: ${clients}"
    [ -z "$leasehold_args" ] || echo "leasehold serve flags: $leasehold_args"
} | tee "$RESULTS/machine.txt" >&2

# run NAME TARGET ARGS...: one bench run, its JSON report kept, a summary line.
run() {
    local name=$1 target=$2; shift 2
    local endpoints=$LH_ENDPOINTS pids
    [ "$target" = etcd ] && endpoints=$ETCD_ENDPOINTS
    pids=$(pids_of "$([ "$target" = etcd ] && echo etcd || echo lh)")
    local out="$RESULTS/$name-$target.json"
    if ! "$BENCH_BIN" --endpoints "$endpoints" -o json "$@" --target "$target" \
        --server-pids "$pids" --quiet >"$out.tmp" 2>"$RESULTS/$name-$target.err"; then
        echo "   $name $target: FAILED (see $RESULTS/$name-$target.err)" >&2
        rm -f "$out.tmp"
        return 0
    fi
    mv "$out.tmp" "$out"
    # One line per run, from the report itself.
    "$BENCH_BIN" table "$out" | awk -F'|' -v n="$name" -v t="$target" \
        'NR==3 {gsub(/ /,"",$6); gsub(/ /,"",$7); gsub(/ /,"",$9); gsub(/ /,"",$10); gsub(/ /,"",$12); gsub(/ /,"",$13);
                ops = (t=="etcd") ? $7 : $6; p50 = (t=="etcd") ? $10 : $9; p99 = (t=="etcd") ? $13 : $12;
                printf "   %-22s %-9s %8s ops/s  p50 %s ms  p99 %s ms\n", n, t, ops, p50, p99}' >&2
}

for w in $workloads; do
    for c in $clients; do
        for r in $(seq 1 "$repeats"); do
            # Alternate which system goes first, so neither always runs on a
            # warmer (or more loaded) machine.
            if [ $((r % 2)) = 1 ]; then order="leasehold etcd"; else order="etcd leasehold"; fi
            for t in $order; do
                run "$w-c$c-r$r" "$t" "$w" --clients "$c" --duration "$duration" --warmup "$warmup"
            done
        done
    done
done
if [ "$watch" = 1 ]; then
    for t in leasehold etcd; do
        run "watch-c16-r1" "$t" watch --clients 16 --watchers 4 --duration "$duration" --warmup "$warmup"
    done
fi
if [ "$failover" = 1 ]; then
    for t in leasehold etcd; do
        run "failover-c16-r1" "$t" failover --clients 16 --duration 12 --kill-after 4
        revive
    done
fi
if [ "$restart" = 1 ]; then
    for t in leasehold etcd; do
        key=lh; [ "$t" = etcd ] && key=etcd
        restart_scripts "$t"
        run "restart-c16-r1" "$t" restart --clients 16 --duration 40 \
            --restart-cmd "exec bash '$RESULTS/start-$t-{id}.sh'"
        adopt_restarted "$t" "$key"
        revive
    done
fi

if [ "$scale" -gt 0 ]; then
    say "scale: $scale leases, $scale_minutes min of renewals, then a follower restarted"
    # The command the bench runs to restart the node it killed ({id}: its
    # id; ports are 1717<id>). It leaves its pid in a file for the cleanup:
    # the restarted node is the bench's child, not this script's.
    restart_cmd="echo \$\$ >'$RESULTS/restarted-{id}.pid'; exec '$BIN' serve --id {id} --listen 127.0.0.1:1717{id} --data-dir '$DATA/leasehold-{id}' --peers '$LH_PEERS' --hostname bench-{id} $leasehold_args >>'$RESULTS/leasehold-{id}.log' 2>&1"
    out="$RESULTS/scale-$scale-leasehold.json"
    if "$BENCH_BIN" --endpoints "$LH_ENDPOINTS" -o json scale --namespace scale --leases "$scale" \
        --clients 64 --renew-minutes "$scale_minutes" --server-pids "$(pids_of lh)" \
        --data-dirs "$DATA/leasehold-1,$DATA/leasehold-2,$DATA/leasehold-3" \
        --restart-cmd "$restart_cmd" >"$out.tmp" 2>"$RESULTS/scale-$scale-leasehold.err"; then
        mv "$out.tmp" "$out"
        sed -n '/"scale": {/,/^  }/p' "$out" >&2
    else
        echo "   scale: FAILED (see $RESULTS/scale-$scale-leasehold.err)" >&2
    fi
    for f in "$RESULTS"/restarted-*.pid; do
        [ -f "$f" ] && PID[restarted-$(basename "$f" .pid)]=$(cat "$f")
    done
    # Long scans must not stall writes: renewals (16 clients, their own
    # 10,000 leases) without and then with 8 clients listing every lease
    # with a selector that matches nothing, on the cluster that holds the
    # scale run's leases. Kept apart from the table's renew runs.
    mkdir -p "$RESULTS/scan"
    for scanners in 0 8; do
        say "renew with $scanners scanners over the $scale leases"
        out="$RESULTS/scan/renew-scanners-$scanners.json"
        if "$BENCH_BIN" --endpoints "$LH_ENDPOINTS" -o json renew --clients 16 \
            --duration "$duration" --warmup "$warmup" --scanners "$scanners" \
            >"$out.tmp" 2>"$RESULTS/scan/renew-scanners-$scanners.err"; then
            mv "$out.tmp" "$out"
        else
            echo "   renew with $scanners scanners: FAILED (see $RESULTS/scan/)" >&2
        fi
    done
fi

say "results: $RESULTS"
"$BENCH_BIN" table "$RESULTS" | tee "$RESULTS/table.md"
if [ -n "$plots_dir" ]; then
    "$BENCH_BIN" plot "$RESULTS" --out-dir "$plots_dir"
fi
