#!/bin/sh
# kiln's main job on a fresh machine: a real build of examples/multi-stage
# (multi-stage, RUN with a cache mount, COPY --from, COPY heredoc, USER),
# over a busybox base made here from Debian's busybox-static (there is no
# public registry to pull one from), then the image is run.
#
# Usage: cargo build --release && scripts/demo.sh
# Environment: KILN (binary, default target/x86_64-unknown-linux-gnu/release/kiln), KILN_ROOT (store;
# default a new temporary directory).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
kiln=${KILN:-$here/target/x86_64-unknown-linux-gnu/release/kiln}
[ -x "$kiln" ] || { echo "no kiln binary at $kiln (cargo build --release)" >&2; exit 1; }
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "busybox is needed (apt-get install busybox-static)" >&2; exit 1; }
KILN_ROOT=${KILN_ROOT:-$(mktemp -d "${TMPDIR:-/tmp}/kiln-demo-XXXXXX")}
export KILN_ROOT
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-demo-base-XXXXXX")
trap 'rm -rf "$work"' EXIT

# The base: busybox and its applet links, a passwd with root and nobody.
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/root"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$work/rootfs/bin/$applet" ] || ln -s busybox "$work/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
"$kiln" import "$work/busybox.tar" busybox:latest >/dev/null

echo "== kiln build -t demo:latest examples/multi-stage (store: $KILN_ROOT)"
"$kiln" build -t demo:latest "$here/examples/multi-stage"
echo "== kiln history demo:latest"
"$kiln" history demo:latest
echo "== kiln run --rm demo:latest"
"$kiln" run --rm demo:latest
