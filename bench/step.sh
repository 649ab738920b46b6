#!/bin/sh
# Per-step overhead of a RUN on a 50,000-file base, for each kiln snapshotter,
# beside rootless buildah doing the same step (from + run + commit) in the
# same run.
#
#   overhead = median wall time of the step running `touch /x`
#              - median time of `touch` itself (run directly on the host)
#
# Also printed: the median wall time of a step running `true`, and kiln's own
# phase timings (prepare/run/changes/write) for the touch step.
# Targets (issue 4): overlay <= 50 ms, walk <= 1 s, both below buildah.
#
# Usage (as root, which runs kiln and buildah as the unprivileged test user,
# or as a normal user with subordinate ids):
#   cargo build --release && bench/step.sh [RUNS]
# Environment: KILN (binary, default target/x86_64-unknown-linux-gnu/release/kiln), BENCH_USER
# (default kiln-test when root), FILES (default 50000), SNAPSHOTTERS
# (default "overlay fuse-overlayfs walk"), NO_BUILDAH=1 to skip buildah.
set -eu

RUNS=${1:-7}
FILES=${FILES:-50000}
SNAPSHOTTERS=${SNAPSHOTTERS:-overlay fuse-overlayfs walk}
here=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$here/target/x86_64-unknown-linux-gnu/release/kiln}
[ -x "$KILN" ] || { echo "no kiln binary at $KILN (cargo build --release)" >&2; exit 1; }
for t in jq busybox tar; do
    command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/kiln-bench-step.XXXXXX)
trap 'cleanup' EXIT INT TERM

if [ "$(id -u)" = 0 ]; then
    BENCH_USER=${BENCH_USER:-kiln-test}
    id "$BENCH_USER" >/dev/null 2>&1 || { echo "no user $BENCH_USER (run the tests once as root to create it)" >&2; exit 1; }
    uid=$(id -u "$BENCH_USER")
    gid=$(id -g "$BENCH_USER")
    as_user() { setpriv --reuid="$uid" --regid="$gid" --init-groups -- env HOME="$work/home" XDG_RUNTIME_DIR="$work/run" "$@"; }
    [ -e /dev/fuse ] && chmod 0666 /dev/fuse
else
    as_user() { env HOME="$work/home" XDG_RUNTIME_DIR="$work/run" "$@"; }
fi
mkdir -p "$work/home" "$work/run" "$work/rootfs"
chmod 0700 "$work/run"
[ "$(id -u)" = 0 ] && chown -R "$uid:$gid" "$work"

cleanup() {
    # buildah's storage holds files of subordinate uids: remove it as the user.
    if [ -d "$work/buildah" ] && [ "$(id -u)" != 0 ]; then
        as_user buildah unshare rm -rf "$work/buildah" >/dev/null 2>&1 || true
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$work" 2>/dev/null || true
}

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ms() { awk -v ns="$1" 'BEGIN {printf "%.1f", ns/1e6}'; }

echo "== base image: busybox + $FILES files"
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/data" "$root/proc" "$root/dev" "$root/sys"
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
dirs=$((FILES / 100))
i=0
while [ $i -lt $dirs ]; do
    mkdir "$root/data/d$i"
    (cd "$root/data/d$i" && touch $(seq -f 'f%g' 1 100))
    i=$((i + 1))
done
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$work/base.tar" .
[ "$(id -u)" = 0 ] && chown "$uid:$gid" "$work/base.tar"
as_user "$KILN" --root "$work/store" import "$work/base.tar" bench-base >/dev/null
echo "   $(tar -tf "$work/base.tar" | wc -l) entries"

# The command's own time, on the host.
touch_ns=$(for r in $(seq "$RUNS"); do s=$(now_ns); touch "$work/x"; e=$(now_ns); echo $((e - s)); done | median)
echo "== touch on the host: $(ms "$touch_ns") ms"

results=""
for snap in $SNAPSHOTTERS; do
    # Warm-up: unpacks the base once (shared by later steps), checks support;
    # for walk it also builds the merged tree that later steps reuse.
    if ! as_user "$KILN" --root "$work/store" debug run-step bench-base --snapshotter "$snap" --format json -- true >"$work/warm.json" 2>"$work/warm.err"; then
        echo "== kiln $snap: unsupported here: $(tail -1 "$work/warm.err")"
        continue
    fi
    for cmd in true "touch /x"; do
        : >"$work/samples"
        : >"$work/phases"
        for r in $(seq "$RUNS"); do
            s=$(now_ns)
            as_user "$KILN" --root "$work/store" debug run-step bench-base --snapshotter "$snap" --format json -- "$cmd" >"$work/out.json"
            e=$(now_ns)
            echo $((e - s)) >>"$work/samples"
            jq -c .timings_ms "$work/out.json" >>"$work/phases"
        done
        med=$(median <"$work/samples")
        if [ "$cmd" = true ]; then
            true_med=$med
        else
            touch_med=$med
            phases=$(jq -s '{prepare: (map(.prepare)|sort|.[length/2|floor]), run: (map(.run)|sort|.[length/2|floor]), changes: (map(.changes)|sort|.[length/2|floor]), write: (map(.write)|sort|.[length/2|floor])}' -c "$work/phases")
        fi
    done
    over=$((touch_med - touch_ns))
    echo "== kiln $snap: step(true) $(ms "$true_med") ms, step(touch) $(ms "$touch_med") ms, overhead $(ms "$over") ms; median phases of touch: $phases"
    results="$results $snap:$over"
done

# buildah: rootless, with each storage driver. Its OCI runtime (crun) cannot
# create containers on hosts with hybrid cgroups (this VM), so it runs with
# --isolation chroot (its own user namespace, no cgroups): the cheapest mode.
buildah_results=""
if [ "${NO_BUILDAH:-}" != 1 ] && command -v buildah >/dev/null; then
    as_user "$KILN" --root "$work/store" save bench-base -o "$work/base-docker.tar"
    for drv in ${BUILDAH_DRIVERS:-overlay vfs}; do
        b() { as_user buildah --root "$work/buildah/$drv/root" --runroot "$work/buildah/$drv/run" --storage-driver "$drv" "$@"; }
        mkdir -p "$work/buildah/$drv"
        [ "$(id -u)" = 0 ] && chown -R "$uid:$gid" "$work/buildah"
        b pull -q "docker-archive:$work/base-docker.tar" >/dev/null
        img=$(b images -q | head -1)
        # Warm-up.
        c=$(b from --pull-never "$img"); b run --isolation chroot "$c" -- touch /x; b commit -q "$c" warm >/dev/null; b rm "$c" >/dev/null
        : >"$work/bsamples"
        for r in $(seq "$RUNS"); do
            s=$(now_ns)
            c=$(b from --pull-never "$img")
            b run --isolation chroot "$c" -- touch /x
            b commit -q "$c" "bench-$r" >/dev/null
            e=$(now_ns)
            b rm "$c" >/dev/null
            echo $((e - s)) >>"$work/bsamples"
        done
        bmed=$(median <"$work/bsamples")
        over=$((bmed - touch_ns))
        echo "== buildah $drv (rootless, --isolation chroot): from+run+commit $(ms "$bmed") ms, overhead $(ms "$over") ms"
        buildah_results="$buildah_results $drv:$over"
    done
fi
best_buildah=$(for r in $buildah_results; do echo "${r#*:}"; done | sort -n | head -1)

echo
echo "summary (median of $RUNS, overhead = step wall time - touch's own time):"
for r in $results; do
    snap=${r%%:*}
    over=${r#*:}
    line="  kiln $snap: $(ms "$over") ms"
    if [ -n "$best_buildah" ]; then
        line="$line  (fastest buildah $(ms "$best_buildah") ms, ratio kiln/buildah $(awk -v a="$over" -v b="$best_buildah" 'BEGIN {printf "%.3f", a/b}'))"
    fi
    echo "$line"
done
