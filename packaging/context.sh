#!/bin/sh
# Writes the build context of kiln's own image (the top-level Containerfile)
# into DIR: the kiln binary, the CA bundle, the /etc files from
# packaging/rootfs, and dirs.tar with the image's directories.
#
#   packaging/context.sh DIR [BINARY]
#   kiln build -f Containerfile -t kiln:VERSION DIR
#
# BINARY defaults to the release build, target/x86_64-unknown-linux-gnu/release/kiln
# (static: see .cargo/config.toml); it is copied stripped. CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt, Debian's ca-certificates) is the bundle
# copied in. Nothing in the checkout is written; DIR must not exist yet.
set -eu

usage() { echo "usage: $0 DIR [BINARY]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
here=$(cd "$(dirname "$0")/.." && pwd)
out=$1
binary=${2:-$here/target/x86_64-unknown-linux-gnu/release/kiln}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

[ -f "$binary" ] || { echo "$0: no kiln binary at $binary (cargo build --release)" >&2; exit 1; }
[ -f "$ca_bundle" ] || { echo "$0: no CA bundle at $ca_bundle (Debian package ca-certificates)" >&2; exit 1; }
if ! file -b "$binary" | grep -Eq 'statically linked|static-pie linked'; then
    echo "$0: $binary is not statically linked; it would not run in a FROM scratch image" >&2
    exit 1
fi
[ -e "$out" ] && { echo "$0: $out already exists" >&2; exit 1; }

mkdir -p "$out"
# A debug build carries ~10x its size in debug info; the image needs none.
strip --strip-all -o "$out/kiln" "$binary"
cp "$ca_bundle" "$out/ca-certificates.crt"
cp -R "$here/packaging/rootfs/etc" "$out/etc"

# COPY cannot give a directory a mode like /tmp's 1777 (BuildKit applies
# --chmod to what is copied, not to the directories it creates); ADD of a tar
# keeps each entry's owner and mode exactly, for every builder.
skel=$(mktemp -d)
trap 'rm -rf "$skel"' EXIT
mkdir -p "$skel/tmp" "$skel/home/kiln" "$skel/workspace"
tar_dirs() {
    tar --format=ustar --numeric-owner --mtime=@0 --no-recursion -C "$skel" "$@"
}
tar_dirs -cf "$out/dirs.tar" --owner=0 --group=0 --mode=1777 tmp
tar_dirs -rf "$out/dirs.tar" --owner=0 --group=0 --mode=0755 home
tar_dirs -rf "$out/dirs.tar" --owner=1000 --group=1000 --mode=0755 home/kiln workspace
echo "$out"
