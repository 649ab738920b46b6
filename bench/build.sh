#!/usr/bin/env bash
# Whole-build benchmark (issue 5): cold / fully cached / one-file-edit builds
# (and push) of the testbed's contexts with kiln, rootless buildah
# (`bud --layers`, kernel overlay storage) and BuildKit (dockerd), in the same
# run, by the testbed's own driver (../shared/testbed/bench/peers.sh, which
# knows kiln as a peer). Prints the medians table and kiln's ratio to each peer.
# buildah runs as the testbed's `buildah-chroot` peer (overlay storage,
# --isolation chroot): its OCI runtime (crun) refuses this VM's hybrid cgroups,
# so the `buildah-overlay` peer fails every RUN here.
#
# Usage (as root; needs ../shared beside the repo, docker.io, buildah, podman):
#   cargo build --release && bench/build.sh [REPS]
# Environment: CONTEXTS (default "flask-app apt-install many-files big-layer
# cache-edit multi-stage"), PEERS (default "kiln buildah-chroot docker"),
# NO_PUSH=1 to skip the push phase.
# Targets (issue 5): cold <= 0.8x buildah and <= 1.0x BuildKit; cached
# <= 0.15 s and <= 1.0x BuildKit; edit <= 1.0x BuildKit; big-layer build+push
# <= 0.6x BuildKit.
set -euo pipefail
REPS=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
testbed=${TESTBED:-$here/../shared/testbed}
[ -d "$testbed" ] || { echo "no testbed at $testbed" >&2; exit 1; }
bin=$here/target/x86_64-unknown-linux-gnu/release/kiln
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
# The builder user must be able to run it: a copy outside root's tree.
install -m 0755 "$bin" /usr/local/bin/kiln-bench
export KILN_BIN=/usr/local/bin/kiln-bench
pidof dockerd >/dev/null || { dockerd >/var/log/dockerd.log 2>&1 & }
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
"$testbed/up.sh"
CONTEXTS=${CONTEXTS:-flask-app apt-install many-files big-layer cache-edit multi-stage}
PEERS=${PEERS:-kiln buildah-chroot docker}
csv=$(mktemp /tmp/kiln-build-bench-XXXX.csv)
args=(-c "$CONTEXTS" -p "$PEERS" -n "$REPS" -o "$csv")
[ -n "${NO_PUSH:-}" ] && args+=(-P)
"$testbed/bench/peers.sh" "${args[@]}"
"$testbed/bench/summarize.py" "$csv"
# kiln / peer ratios of the medians, per context and phase.
python3 - "$csv" <<'PY'
import csv, statistics, sys
from collections import defaultdict
d = defaultdict(list)
for r in csv.DictReader(open(sys.argv[1])):
    if r['rc'] == '0':
        d[(r['context'], r['peer'], r['phase'])].append(float(r['wall_s']))
med = {k: statistics.median(v) for k, v in d.items()}
ctxs = sorted({k[0] for k in med})
peers = sorted({k[1] for k in med if k[1] != 'kiln'})
print('\n| context | phase | kiln s | ' + ' | '.join(f'{p} s | ratio' for p in peers) + ' |')
print('|---|---|---|' + '---|---|' * len(peers))
for c in ctxs:
    for ph in ['cold', 'cached', 'edit', 'push']:
        k = med.get((c, 'kiln', ph))
        if k is None:
            continue
        cells = []
        for p in peers:
            v = med.get((c, p, ph))
            cells += [f'{v:.2f}' if v else '–', f'{k / v:.2f}' if v else '–']
        print(f'| {c} | {ph} | {k:.2f} | ' + ' | '.join(cells) + ' |')
PY
echo "raw results: $csv"
