#!/usr/bin/env bash
# Ingest of production-sized capture files next to many small ones, the same
# events in all three shapes (partitions x files per partition):
#   32x72  ~4,300 events a file (~0.7 MB deflate at 10M events)
#   32x1   ~312,500 events a file (~50 MB), a busy hub's 5-minute window
#   4x1    ~2.5M events a file (~400 MB), beyond Capture's 300 MB size limit
# Each block comes from bench/stages.sh (wall, events/s, MB/s, CPU, peak
# RSS). Peak RSS must not follow the file size.
#
#   EVENTS=10000000 bench/capture_sizes.sh   # the figures in the README
#   bench/capture_sizes.sh                   # 1M events
set -euo pipefail
cd "$(dirname "$0")/.."
export EVENTS=${EVENTS:-1000000} STAGES=ingest
OUT_ROOT=${OUT:-bench/out}
for shape in ${SHAPES:-32x72 32x1 4x1}; do
  OUT="$OUT_ROOT/shape-$shape" PARTITIONS=${shape%x*} FILES_PER_PARTITION=${shape#*x} bench/stages.sh
done
