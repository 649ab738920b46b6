#!/usr/bin/env bash
# Registry cache benchmark: a fully cached rebuild in a fresh, empty store
# whose result goes to the same registry, kiln (`--cache-from
# type=registry`) beside BuildKit (dockerd's, inline cache), and the cost of
# re-exporting a cache whose layers all exist already.
#
# 1. rebuild: a Dockerfile with a ~20 MB RUN layer, COPYs and a second RUN
#    over a base in a loopback docker-registry. First build exports the
#    cache (kiln: --cache-to type=registry; BuildKit: BUILDKIT_INLINE_CACHE=1
#    and a push); then RUNS times, from nothing on disk, rebuild with the
#    cache and push the result to the same registry:
#      kiln:     a new --root, `build --cache-from … --push -t …`
#      BuildKit: `docker builder prune -af`, `docker rmi` of the images,
#                `docker build --cache-from REF -t …` + `docker push`
#    Prints the median wall time of each, and the layer blobs the registry
#    served during kiln's rebuild (0 is the goal).
# 2. export: a Dockerfile of N COPY steps (N layers); a build exports its
#    cache, then a fresh store imports it and exports it again: every layer
#    exists, so the export is a HEAD per layer. Prints the median export
#    time divided by N (kiln's own "cache: exported … in T" line).
#
# Usage: bench/cache.sh [-n RUNS] [-l LAYERS]
# Needs (as root): docker-registry, skopeo, jq, a release build of kiln
# (KILN=/path overrides), and for the BuildKit column a running dockerd
# (skipped when `docker info` fails). `docker builder prune -af` drops the
# daemon's whole build cache: do not run this beside other docker builds.
set -euo pipefail

RUNS=3
LAYERS=50
while getopts "n:l:" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    l) LAYERS=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [-l LAYERS]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$here/target/release/kiln}
if [[ ! -x $KILN ]]; then
  (cd "$here" && cargo build --release --quiet)
fi
for tool in docker-registry skopeo jq; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
# Debian's docker client: its built-in BuildKit session needs no buildx
# (DOCKER=… overrides).
DOCKER=${DOCKER:-/usr/bin/docker}
have_docker=0
if [[ -x $DOCKER ]] && "$DOCKER" info >/dev/null 2>&1; then have_docker=1; fi

work=$(mktemp -d /tmp/kiln-cache-bench-XXXXXX)
registry_pid=
docker_tags=()
cleanup() {
  if [[ -n $registry_pid ]]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  for t in "${docker_tags[@]}"; do "$DOCKER" rmi -f "$t" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    port_open "$p" || { echo "$p"; return; }
  done
  echo "no free port" >&2; exit 1
}
# The registry logs every request (info level), so the layer GETs of a
# rebuild can be counted.
dir=$work/registry; mkdir -p "$dir"
port=$(free_port); REG=127.0.0.1:$port
cat > "$dir/config.yml" <<YAML
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/storage}
  delete: {enabled: true}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: $REG, secret: kiln-bench}
YAML
env -u REGISTRY_HTTP_ADDR docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do port_open "$port" && break; sleep 0.1; done
port_open "$port" || { echo "registry did not start" >&2; cat "$dir/log" >&2; exit 1; }

# The base: the busybox binary alone, as an OCI layout pushed by skopeo.
bb=$(command -v busybox)
base_layout=$work/base; mkdir -p "$work/baseroot/bin" "$base_layout/blobs/sha256"
cp "$bb" "$work/baseroot/bin/busybox"
for a in sh cat dd echo sleep wc; do ln -sf busybox "$work/baseroot/bin/$a"; done
tar -C "$work/baseroot" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/base.tar" bin
diff=$(sha256sum "$work/base.tar" | cut -d' ' -f1)
gzip -n -c "$work/base.tar" > "$work/base.tgz"
ld=$(sha256sum "$work/base.tgz" | cut -d' ' -f1); lsize=$(stat -c %s "$work/base.tgz")
mv "$work/base.tgz" "$base_layout/blobs/sha256/$ld"
jq -cn --arg d "sha256:$diff" '{architecture:"amd64",os:"linux",created:"1970-01-01T00:00:00Z",config:{Env:["PATH=/bin"]},rootfs:{type:"layers",diff_ids:[$d]}}' | tr -d '\n' > "$work/c.json"
cd_=$(sha256sum "$work/c.json" | cut -d' ' -f1); cs=$(stat -c %s "$work/c.json"); mv "$work/c.json" "$base_layout/blobs/sha256/$cd_"
jq -cn --arg c "sha256:$cd_" --argjson cs "$cs" --arg l "sha256:$ld" --argjson ls "$lsize" \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$c,size:$cs},layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$l,size:$ls}]}' \
  | tr -d '\n' > "$work/m.json"
md=$(sha256sum "$work/m.json" | cut -d' ' -f1); ms=$(stat -c %s "$work/m.json"); mv "$work/m.json" "$base_layout/blobs/sha256/$md"
jq -cn --arg m "sha256:$md" --argjson ms "$ms" '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$m,size:$ms,annotations:{"org.opencontainers.image.ref.name":"base"}}]}' > "$base_layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$base_layout/oci-layout"
skopeo copy --quiet --dest-tls-verify=false "oci:$base_layout:base" "docker://$REG/bench/base:1"

ctx=$work/ctx; mkdir -p "$ctx/src"
for i in $(seq 1 20); do head -c 4096 /dev/urandom | base64 > "$ctx/src/f$i.txt"; done
cat > "$ctx/Dockerfile" <<EOF
FROM $REG/bench/base:1
RUN dd if=/dev/urandom of=/data.bin bs=1M count=20 2>/dev/null && sleep 1
COPY src/ /src/
RUN cat /src/*.txt | wc -c > /count && sleep 1
EOF

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
requests() { grep -c 'msg="response completed"' "$dir/log" || true; }
layer_gets_since() { # N: GETs of blobs (not manifests) after the Nth request line
  grep 'msg="response completed"' "$dir/log" | tail -n +"$(( $1 + 1 ))" \
    | grep -c 'http.request.method=GET .*http.request.uri="/v2/[^"]*/blobs/sha256' || true
}

echo "1. fully cached rebuild in an empty store, pushed to the same registry (x$RUNS)" >&2
export SOURCE_DATE_EPOCH=0
"$KILN" --root "$work/k0" build -q --cache-to "type=registry,ref=$REG/bench/cache:k" \
  --push -t "$REG/bench/app:k1" "$ctx" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
: > "$work/kiln-rebuild"; : > "$work/kiln-gets"
for i in $(seq 1 "$RUNS"); do
  rm -rf "$work/k$i"; sync
  n=$(requests); t0=$(now)
  "$KILN" --root "$work/k$i" build --progress=plain --cache-from "type=registry,ref=$REG/bench/cache:k" \
    --push -t "$REG/bench/app:k2" "$ctx" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  t1=$(now)
  grep -q "0 steps run" "$work/err" || { echo "kiln rebuild ran a step:" >&2; cat "$work/err" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}' >> "$work/kiln-rebuild"
  layer_gets_since "$n" >> "$work/kiln-gets"
  rm -rf "$work/k$i"
  printf '  kiln     %6.2f s, %s blob GET(s) (base config, cache config)\n' "$(tail -1 "$work/kiln-rebuild")" "$(tail -1 "$work/kiln-gets")" >&2
done

: > "$work/docker-rebuild"
if (( have_docker )); then
  export DOCKER_BUILDKIT=1
  d1=$REG/bench/app:d1; d2=$REG/bench/app:d2
  docker_tags=("$d1" "$d2" "$REG/bench/base:1")
  "$DOCKER" build -q --build-arg BUILDKIT_INLINE_CACHE=1 -t "$d1" "$ctx" >/dev/null
  "$DOCKER" push -q "$d1" >/dev/null
  for i in $(seq 1 "$RUNS"); do
    "$DOCKER" builder prune -af >/dev/null
    "$DOCKER" rmi -f "$d1" "$d2" "$REG/bench/base:1" >/dev/null 2>&1 || true
    sync
    t0=$(now)
    "$DOCKER" build --progress=plain --cache-from "$d1" -t "$d2" "$ctx" >/dev/null 2>"$work/derr"
    "$DOCKER" push -q "$d2" >/dev/null
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}' >> "$work/docker-rebuild"
    printf '  BuildKit %6.2f s, %s step(s) CACHED\n' "$(tail -1 "$work/docker-rebuild")" "$(grep -c ' CACHED$' "$work/derr" || true)" >&2
  done
fi

echo "2. re-export of a cache whose $LAYERS layers all exist (x$RUNS)" >&2
lctx=$work/lctx; mkdir -p "$lctx"
{ echo "FROM $REG/bench/base:1"; for i in $(seq 1 "$LAYERS"); do echo "l$i" > "$lctx/l$i"; echo "COPY l$i /l$i"; done; } > "$lctx/Dockerfile"
"$KILN" --root "$work/e0" build -q --cache-to "type=registry,ref=$REG/bench/cache:layers" "$lctx" >/dev/null 2>"$work/err" \
  || { cat "$work/err" >&2; exit 1; }
: > "$work/export-ms"
for i in $(seq 1 "$RUNS"); do
  rm -rf "$work/e$i"
  "$KILN" --root "$work/e$i" build --progress=plain --cache-from "type=registry,ref=$REG/bench/cache:layers" \
    --cache-to "type=registry,ref=$REG/bench/cache:layers" "$lctx" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  line=$(grep 'cache: exported' "$work/err")
  # "... in 123.45ms" or "in 1.23s"
  ms=$(sed -E 's/.* in ([0-9.]+)(ms|s|µs)$/\1 \2/' <<<"$line" | awk '{ if ($2=="s") print $1*1000; else if ($2=="µs") print $1/1000; else print $1 }')
  layers=$(sed -E 's/.* ([0-9]+) layer\(s\).*/\1/' <<<"$line")
  echo "$ms $layers" >> "$work/export-ms"
  rm -rf "$work/e$i"
  printf '  export  %8.1f ms for %s layers (%s)\n' "$ms" "$layers" "$(sed -E 's/.*\((.*)\).*/\1/' <<<"$line")" >&2
done

echo
k=$(median < "$work/kiln-rebuild")
printf '%-44s %8.2f s  (median of %d; layer GETs: %s)\n' "kiln rebuild, empty store, --cache-from + push" "$k" "$RUNS" "$(sort -n "$work/kiln-gets" | tail -1) blob GETs, 2 are the base and cache configs"
if [[ -s $work/docker-rebuild ]]; then
  d=$(median < "$work/docker-rebuild")
  printf '%-44s %8.2f s  (median of %d)\n' "BuildKit rebuild, pruned, --cache-from + push" "$d" "$RUNS"
else
  echo "BuildKit: skipped (no dockerd)"
fi
per=$(awk '{print $1/$2}' "$work/export-ms" | median)
tot=$(awk '{print $1}' "$work/export-ms" | median)
n=$(awk '{print $2}' "$work/export-ms" | head -1)
printf '%-44s %8.2f ms per layer (median of %d: %.1f ms for %d layers: connect, a HEAD per layer, 4 at a time, config HEAD, manifest PUT)\n' \
  "kiln cache re-export, all layers exist" "$per" "$RUNS" "$tot" "$n"
