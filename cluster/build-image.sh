#!/usr/bin/env bash
# Builds the leasehold:local image FROM scratch (no registry needed):
#   1. cargo build --release --locked, at the repository root;
#   2. copies the binary and every shared library ldd lists for it, at the same
#      paths, into cluster/.build/rootfs (plus, unless --no-netutils, the
#      host's iptables/tc/ip and their libraries, for fault injection; and,
#      unless --no-faketime, libfaketime for the chaos suite's clock faults,
#      installed with apt-get first if it is missing and we are root);
#   3. docker build -t leasehold:local -f cluster/Dockerfile cluster/.build,
#      labelled leasehold.faketime=<path of libfaketime in the image, or
#      empty> and leasehold.netutils=1|0, which the chaos suite reads to know
#      what the image can do.
# Usage: cluster/build-image.sh [--no-netutils] [--no-faketime] [--skip-cargo]
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

netutils=1
faketime=1
skip_cargo=0
for arg in "$@"; do
    case "$arg" in
        --no-netutils) netutils=0 ;;
        --no-faketime) faketime=0 ;;
        --skip-cargo) skip_cargo=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

command -v docker >/dev/null || die "docker is not installed"
command -v ldd >/dev/null || die "ldd is not installed"

if [ "$skip_cargo" = 0 ]; then
    command -v cargo >/dev/null || die "cargo is not installed"
    log "building the release binary (cargo build --release --locked; may wait on the cargo lock)"
    (cd "$REPO_ROOT" && cargo build --release --locked) || die "cargo build --release --locked failed"
fi
[ -x "$LEASEHOLD_BIN" ] || die "no release binary at $LEASEHOLD_BIN"

ctx="$CLUSTER_DIR/.build"
rootfs="$ctx/rootfs"
rm -rf "$ctx"
mkdir -p "$rootfs/tmp" "$rootfs/data"
chmod 1777 "$rootfs/tmp"

# copy_libs FILE: copies each library ldd lists for FILE to the same path
# under the rootfs (dereferencing symlinks), failing on any "not found".
copy_libs() {
    local file=$1 out lib
    out=$(ldd "$file" 2>&1) || {
        # A static binary makes ldd fail with "not a dynamic executable".
        grep -q "not a dynamic executable\|statically linked" <<<"$out" && return 0
        die "ldd $file failed: $out"
    }
    if grep -q "not found" <<<"$out"; then
        die "ldd $file: missing libraries:"$'\n'"$(grep "not found" <<<"$out")"
    fi
    # Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
    # or "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
    while read -r lib; do
        [ -n "$lib" ] || continue
        if [ ! -e "$rootfs$lib" ]; then
            mkdir -p "$rootfs$(dirname "$lib")"
            cp -L "$lib" "$rootfs$lib"
        fi
    done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }' <<<"$out")
}

# find_libfaketime: the host's libfaketime.so.1 (Debian/Ubuntu multiarch,
# RPM-style lib64, or a source install under /usr/local), or nothing.
find_libfaketime() {
    local f
    for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib64/faketime/libfaketime.so.1 \
        /usr/lib/faketime/libfaketime.so.1 /usr/local/lib/faketime/libfaketime.so.1; do
        if [ -f "$f" ]; then
            echo "$f"
            return 0
        fi
    done
}

# copy_file SRC DEST_IN_IMAGE: copies a file (dereferenced) and its libraries.
copy_file() {
    mkdir -p "$rootfs$(dirname "$2")"
    cp -L "$1" "$rootfs$2"
    copy_libs "$1"
}

log "collecting $LEASEHOLD_BIN and its libraries"
copy_file "$LEASEHOLD_BIN" /leasehold

if [ "$netutils" = 1 ]; then
    # Best effort: only what the host has. iptables is a multi-call binary
    # that dispatches on its name, and loads match/target modules with
    # dlopen from its compiled-in directory, which ldd cannot see.
    ipt=$(command -v iptables || true)
    if [ -n "$ipt" ]; then
        real=$(readlink -f "$ipt")
        copy_file "$real" "/usr/sbin/$(basename "$real")"
        for name in iptables ip6tables; do
            ln -sf "$(basename "$real")" "$rootfs/usr/sbin/$name"
        done
        for xdir in /usr/lib/x86_64-linux-gnu/xtables /usr/lib64/xtables /usr/lib/xtables; do
            if [ -d "$xdir" ]; then
                mkdir -p "$rootfs$xdir"
                for mod in "$xdir"/*.so; do
                    cp -L "$mod" "$rootfs$mod"
                    copy_libs "$mod"
                done
                break
            fi
        done
        log "  + iptables/ip6tables ($(basename "$real"))"
    else
        log "  (no iptables on the host; the image will not have it)"
    fi
    for tool in tc ip; do
        path=$(command -v "$tool" || true)
        if [ -n "$path" ]; then
            copy_file "$path" "/usr/sbin/$tool"
            log "  + $tool"
        else
            log "  (no $tool on the host; the image will not have it)"
        fi
    done
    # netem delay distributions, if installed (tc ... netem delay X Y distribution normal).
    for tcdir in /usr/lib/tc /usr/lib64/tc; do
        if [ -d "$tcdir" ]; then
            mkdir -p "$rootfs$tcdir"
            cp -L "$tcdir"/* "$rootfs$tcdir"/ 2>/dev/null || true
        fi
    done
fi

# libfaketime, for the chaos suite's clock-offset fault: our binary links
# glibc dynamically, so LD_PRELOAD reaches its clock_gettime calls. Only
# docker-compose.chaos.yml preloads it; docker-compose.yml never does, so the
# image behaves exactly as without it unless a chaos run asks for it.
faketime_label=""
if [ "$faketime" = 1 ]; then
    lib=$(find_libfaketime)
    if [ -z "$lib" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "libfaketime is not installed; installing it (apt-get install libfaketime)"
            # A fresh machine (CI) may have no package lists yet: update only
            # when the first attempt fails.
            if ! apt-get install -y --no-install-recommends libfaketime >&2; then
                if ! { apt-get update >&2 && apt-get install -y --no-install-recommends libfaketime >&2; }; then
                    log "  warning: apt-get could not install libfaketime"
                fi
            fi
            lib=$(find_libfaketime)
        else
            log "  (libfaketime is not installed and cannot be: not root or no apt-get)"
        fi
    fi
    if [ -n "$lib" ]; then
        copy_file "$lib" "$FAKETIME_LIB"
        faketime_label=$FAKETIME_LIB
        log "  + libfaketime ($lib -> $FAKETIME_LIB)"
    else
        log "  (no libfaketime: the image cannot fake clocks; chaos runs report clock-offset as unsupported)"
    fi
fi

log "build context: $(du -sh "$rootfs" | cut -f1) in $ctx"
log "docker build -t $IMAGE"
previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build -t "$IMAGE" -f "$CLUSTER_DIR/Dockerfile" \
    --label "leasehold.faketime=$faketime_label" \
    --label "leasehold.netutils=$netutils" \
    "$ctx" >&2 || die "docker build failed"
current=$(docker image inspect -f '{{.Id}}' "$IMAGE")
# Drop the image this one replaced, unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
log "built image $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
