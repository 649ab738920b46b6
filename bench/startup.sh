#!/bin/sh
# Startup time of the static binary: the median wall time of `kiln --version`
# over RUNS runs (after 3 warm-up runs), plus the binary's size and what
# `file` says about its linking (issue 6: one static binary, <= 30 MB).
#
# Usage: cargo build --release && bench/startup.sh [RUNS]
# Environment: KILN (binary, default target/x86_64-unknown-linux-gnu/release/kiln).
set -eu

RUNS=${1:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$here/target/x86_64-unknown-linux-gnu/release/kiln}
[ -x "$KILN" ] || { echo "no kiln binary at $KILN (cargo build --release)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

echo "binary:  $KILN"
echo "version: $("$KILN" --version)"
echo "file:    $(file -b "$KILN" | cut -d, -f1-5)"
echo "size:    $(stat -c %s "$KILN") bytes"
# One process times every run (a shell's `date` would cost more than kiln).
python3 - "$KILN" "$RUNS" <<'PY'
import statistics, subprocess, sys, time
kiln, runs = sys.argv[1], int(sys.argv[2])
def once():
    start = time.perf_counter()
    subprocess.run([kiln, "--version"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start
for _ in range(3):
    once()
times = sorted(once() for _ in range(runs))
ms = lambda s: f"{s * 1000:.2f} ms"
print(f"kiln --version over {runs} runs: median {ms(statistics.median(times))}, "
      f"min {ms(times[0])}, max {ms(times[-1])}")
PY
