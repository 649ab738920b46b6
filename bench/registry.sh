#!/usr/bin/env bash
# Registry pull/push benchmark: kiln against `skopeo copy`, same machine, same run.
#
# Makes a ~300 MB multi-layer OCI image (incompressible random data, gzip
# layers), serves it from a loopback docker-registry, and times N pulls
# (registry -> kiln's store / skopeo's OCI dir) and N pushes (store / OCI dir
# -> a fresh registry per run, so neither tool can skip uploads by mounting
# blobs it saw before). Prints medians, kiln/skopeo ratios and peak RSS
# (from /usr/bin/time -v).
#
# Usage: bench/registry.sh [-n RUNS] [-s TOTAL_MB] [-l LAYERS]
# Needs: docker-registry, skopeo, jq, gzip, sha256sum, /usr/bin/time (package `time`),
# and a release build of kiln (built here if target/x86_64-unknown-linux-gnu/release/kiln is missing;
# KILN=/path/to/kiln overrides).
set -euo pipefail

RUNS=3
TOTAL_MB=300
LAYERS=5
while getopts "n:s:l:" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    s) TOTAL_MB=$OPTARG ;;
    l) LAYERS=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-s TOTAL_MB] [-l LAYERS]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$here/target/x86_64-unknown-linux-gnu/release/kiln}
if [[ ! -x $KILN ]]; then
  (cd "$here" && cargo build --release --quiet)
fi
for tool in docker-registry skopeo jq gzip sha256sum /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

work=$(mktemp -d /tmp/kiln-bench-XXXXXX)
registry_pid=
cleanup() {
  if [[ -n $registry_pid ]]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- the image -------------------------------------------------------------
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
put_blob() { # FILE -> prints digest, moves FILE into the layout
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$layout/blobs/sha256/$d"
  echo "$d"
}
per_layer=$(( TOTAL_MB / LAYERS ))
echo "making a ${TOTAL_MB} MB image in $LAYERS layers..." >&2
layers_json='[]'; diffs_json='[]'
for i in $(seq 1 "$LAYERS"); do
  dir=$work/rootfs$i; mkdir -p "$dir/data"
  head -c $(( per_layer * 1024 * 1024 )) /dev/urandom > "$dir/data/layer$i.bin"
  tar -C "$dir" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/l$i.tar" data
  diff=$(sha256sum "$work/l$i.tar" | cut -d' ' -f1)
  gzip -1 -n -c "$work/l$i.tar" > "$work/l$i.tgz"
  rm -rf "$dir" "$work/l$i.tar"
  size=$(stat -c %s "$work/l$i.tgz")
  d=$(put_blob "$work/l$i.tgz")
  layers_json=$(jq -c --arg d "sha256:$d" --argjson s "$size" \
    '. + [{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$d,size:$s}]' <<<"$layers_json")
  diffs_json=$(jq -c --arg d "sha256:$diff" '. + [$d]' <<<"$diffs_json")
done
jq -cn --argjson diffs "$diffs_json" \
  '{architecture:"amd64",os:"linux",created:"1970-01-01T00:00:00Z",rootfs:{type:"layers",diff_ids:$diffs}}' \
  | tr -d '\n' > "$work/config.json"
csize=$(stat -c %s "$work/config.json"); cd_=$(put_blob "$work/config.json")
jq -cn --arg c "sha256:$cd_" --argjson cs "$csize" --argjson layers "$layers_json" \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$c,size:$cs},layers:$layers}' \
  | tr -d '\n' > "$work/manifest.json"
msize=$(stat -c %s "$work/manifest.json"); md=$(put_blob "$work/manifest.json")
jq -cn --arg m "sha256:$md" --argjson ms "$msize" \
  '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$m,size:$ms,annotations:{"org.opencontainers.image.ref.name":"img"}}]}' \
  > "$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
echo "image: sha256:$md, $(du -sm "$layout" | cut -f1) MB" >&2

# --- registries ------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    port_open "$p" || { echo "$p"; return; }
  done
  echo "no free port" >&2; exit 1
}
start_registry() { # NAME -> sets $addr and $registry_pid
  local dir=$work/reg-$1 port
  mkdir -p "$dir"
  port=$(free_port)
  addr=127.0.0.1:$port
  cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: error, formatter: text}
storage:
  filesystem: {rootdirectory: $dir/storage}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: $addr, secret: kiln-bench}
YAML
  env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.1
  done
  echo "registry did not start:" >&2; cat "$dir/log" >&2; exit 1
}
stop_registry() {
  kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true
  registry_pid=
  rm -rf "$work/reg-$1"
}

# timed LABEL CMD... : runs CMD under /usr/bin/time -v, appends "secs kib" to $work/LABEL
timed() {
  local label=$1; shift
  sync
  /usr/bin/time -v -o "$work/time.txt" "$@" >/dev/null 2>"$work/err.txt" || {
    echo "$label failed:" >&2; cat "$work/err.txt" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt" \
    | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  echo "$wall $rss" >> "$work/$label"
  printf '  %-12s %6.2f s  %6d MiB\n' "$label" "$wall" $(( rss / 1024 )) >&2
}

start_registry src
src=$addr
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$layout:img" "docker://$src/bench/img:1"
# Make kiln's and skopeo's source for the pushes once (outside the timings).
KILN_PUSH_ROOT=$work/kiln-push-store
"$KILN" --root "$KILN_PUSH_ROOT" pull -q "$src/bench/img:1" >/dev/null

echo "pull x$RUNS (registry -> local)" >&2
for i in $(seq 1 "$RUNS"); do
  rm -rf "$work/kstore" "$work/skdir"
  timed kiln-pull "$KILN" --root "$work/kstore" pull -q "$src/bench/img:1"
  timed skopeo-pull skopeo copy --quiet --src-tls-verify=false "docker://$src/bench/img:1" "oci:$work/skdir:img"
done
rm -rf "$work/kstore" "$work/skdir"
stop_registry src

echo "push x$RUNS (local -> fresh registry)" >&2
for i in $(seq 1 "$RUNS"); do
  start_registry "k$i"
  rm -f "$KILN_PUSH_ROOT/registry-blobs.json"
  timed kiln-push "$KILN" --root "$KILN_PUSH_ROOT" push -q "$src/bench/img:1" "$addr/bench/img:1"
  stop_registry "k$i"
  start_registry "s$i"
  timed skopeo-push skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$layout:img" "docker://$addr/bench/img:1"
  stop_registry "s$i"
done

median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
col() { awk -v c="$2" '{print $c}' "$work/$1"; }
echo
printf '%-6s %12s %12s %8s %14s %14s\n' op "kiln s" "skopeo s" ratio "kiln RSS MiB" "skopeo RSS MiB"
for op in pull push; do
  k=$(col "kiln-$op" 1 | median); s=$(col "skopeo-$op" 1 | median)
  krss=$(col "kiln-$op" 2 | sort -n | tail -1); srss=$(col "skopeo-$op" 2 | sort -n | tail -1)
  printf '%-6s %12.2f %12.2f %8.2f %14d %14d\n' "$op" "$k" "$s" "$(awk -v a="$k" -v b="$s" 'BEGIN{print (b>0)?a/b:0}')" \
    $(( krss / 1024 )) $(( srss / 1024 ))
done
echo "(median of $RUNS runs; RSS is the peak over the runs; image ${TOTAL_MB} MB in $LAYERS gzip layers)"
