#!/bin/sh
# Installs what kiln's integration tests need on Debian 12. Idempotent.
# Run as root (re-runs itself through sudo when it can). The tests start their own registries, so the packaged
# docker-registry service is stopped and disabled.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo sh "$0" "$@"
    fi
    echo "install-test-deps.sh: must run as root (no sudo found)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
# docker-registry: Distribution v2 server; skopeo, umoci: reference OCI
# tools; busybox-static: the test base image; uidmap: newuidmap/newgidmap;
# passwd: useradd/usermod; util-linux: setpriv, flock; podman: reads kiln's
# docker-archive output (`podman load`); openssl, apache2-utils: a test CA
# and htpasswd for the TLS+auth registry; time: peak RSS in bench/; zstd:
# checks zstd layers; fuse-overlayfs: the snapshotter used when kernel
# overlay is refused; mmdebstrap: the Debian base image of the RUN-step tests
# (fetches from the Debian mirror apt is configured with); docker.io:
# BuildKit (dockerd's built-in one, `DOCKER_BUILDKIT=1 /usr/bin/docker
# build`) is the reference builder of the differential suite, which starts
# dockerd itself when it is not running (tests/support/buildkit.rs); buildah:
# the second reference builder its harness self-test uses; attr: getfattr,
# which reads the xattrs of unpacked image trees.
apt-get install -y --no-install-recommends \
    docker-registry skopeo umoci busybox-static uidmap jq ca-certificates \
    passwd util-linux podman openssl apache2-utils time zstd fuse-overlayfs \
    mmdebstrap docker.io buildah attr

# runc: the runtime the seed tests give podman (crun refuses hybrid cgroups).
apt-get install -y --no-install-recommends runc

# k8s manifests (issue 6): kubernetes-validate checks k8s/ against the
# Kubernetes JSON schemas it bundles (offline, strict); check-jsonschema checks
# docs/ci/ against the GitHub workflow and GitLab CI schemas it vendors. Pinned,
# in a venv of Debian's python3 (its pip refuses system-wide installs, PEP 668);
# tests/k8s_manifests.rs runs them from /opt/kiln-venv/bin.
apt-get install -y --no-install-recommends python3 python3-venv
if [ ! -x /opt/kiln-venv/bin/pip ]; then
    /usr/bin/python3 -m venv /opt/kiln-venv
fi
/opt/kiln-venv/bin/pip install --quiet --disable-pip-version-check \
    kubernetes-validate==1.37.0 check-jsonschema==0.39.0

# container tiers (issue 6): tests/container_tiers.rs runs kiln inside podman
# (runc, vfs, its own store) and docker containers whose image it assembles
# from busybox-static, the libraries `ldd` (libc-bin) lists for kiln, and the
# host's setuid newuidmap/newgidmap (uidmap); all installed above except
# libc-bin, which Debian always has. Under CI (`CI=true`) a missing runtime
# fails those tests instead of skipping them.
apt-get install -y --no-install-recommends podman runc docker.io busybox-static uidmap libc-bin

# static (issue 6, kiln's own image): file says whether the binary is
# statically linked; strip (binutils) and tar assemble the image's build
# context (packaging/context.sh).
apt-get install -y --no-install-recommends file binutils tar

if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service
elif [ -x /etc/init.d/docker-registry ]; then
    /etc/init.d/docker-registry stop || true  # fails when not running
    update-rc.d docker-registry disable
fi
echo "install-test-deps.sh: done"
