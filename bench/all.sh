#!/usr/bin/env bash
# Every performance figure in one command: the whole job and its peers at
# 1M and 10M events (bench/compare.sh, with each stage's block), the
# incremental run into a 10M-event lake (bench/incremental.sh) and maintain
# after a day of 288 five-minute runs (bench/maintain_day.sh), then the
# targets next to what was measured. About 40 minutes on 2 cores; needs
# ~30 GB of disk under OUT (bench/out).
#
#   bench/all.sh
#   BUILD=0 bench/all.sh        # the release binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
[[ ${BUILD:-1} == 0 ]] || cargo build --release --locked -p weir-jobs --bins >&2
export BUILD=0
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
EVENTS=1000000 bench/compare.sh | tee "$OUT/all-1m.txt"
EVENTS=10000000 bench/compare.sh | tee "$OUT/all-10m.txt"
bench/incremental.sh | tee "$OUT/all-incremental.txt"
bench/maintain_day.sh | tee "$OUT/all-maintain-day.txt"

python3 bench/targets.py "$OUT"
