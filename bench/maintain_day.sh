#!/usr/bin/env bash
# Maintain after a day of scheduled runs: one hub's day of Capture (32
# partitions x 288 five-minute windows = 9,216 files) landed by 288 runs of
# `weir ingest` + `weir process`, one per window as a five-minute schedule
# makes them, then `weir maintain` with the example's policies (raw
# retention, compaction, processed z-ordered by userId and eventTimestamp,
# vacuum, checkpoints). Prints the runs' total and slowest times and, per
# table and action, files and MB before and after and the time taken.
#
#   bench/maintain_day.sh                 # 50 events a file (~460k a day)
#   PER_FILE=200 bench/maintain_day.sh    # a busier hub
#   BUILD=0 ...                           # binaries as they are
#
# Output: `key: value` lines between "== weir maintain-day bench" and
# "== end".
set -euo pipefail
cd "$(dirname "$0")/.."
PARTITIONS=${PARTITIONS:-32}
WINDOWS=${WINDOWS:-288}
PER_FILE=${PER_FILE:-50}
OUT=${OUT:-bench/out}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}
[[ ${BUILD:-1} == 0 ]] || cargo build --release --locked -p weir-jobs --bins >&2
BIN=$CARGO_TARGET_DIR/release
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

data="$OUT/day-$PARTITIONS-$WINDOWS-$PER_FILE"
if [[ ! -f $data/.summary.json ]]; then
  rm -rf "$data"
  "$BIN/weir-capture-gen" --out "$data" --events $(( PARTITIONS * WINDOWS * PER_FILE )) --partitions "$PARTITIONS" \
    --events-per-file "$PER_FILE" --window-secs 300 --codec deflate --seed 5 \
    --defect-ppm 14000 --duplicate-ppm 20000 > "$data.summary.tmp"
  mv "$data.summary.tmp" "$data/.summary.json"
fi

capture="$OUT/day-capture"
lake="$OUT/day-lake"
rm -rf "$capture" "$lake" "$OUT/day-runs.log"
mkdir -p "$capture"
cat > "$OUT/day.yaml" <<YAML
name: bench
source:
  capture:
    url: $capture
body:
  schema: $(realpath schemas/user_event.avsc)
tables:
  raw: {path: $lake/raw}
  processed: {path: $lake/processed}
  quarantine: {path: $lake/quarantine}
YAML
# The example's process section (rules, PII, dedup) and maintain policies.
sed -n '/^process:/,/^# Curated tables/p' pipelines/user_events.yaml | sed '$d' >> "$OUT/day.yaml"
sed -n '/^maintain:/,$p' pipelines/user_events.yaml >> "$OUT/day.yaml"

# Windows in time order: each run finds the one window Capture just wrote.
(cd "$data" && find . -name '*.avro' | awk -F/ '{print $3$4$5$6$7"/"$0}' | sort) > "$OUT/day-files.txt"
slowest=0
began=$(date +%s.%N)
for w in $(cut -d/ -f1 "$OUT/day-files.txt" | uniq); do
  grep "^$w/" "$OUT/day-files.txt" | cut -d/ -f2- | while read -r f; do
    mkdir -p "$capture/$(dirname "$f")"
    ln -f "$data/$f" "$capture/$f"
  done
  t0=$(date +%s.%N)
  "$BIN/weir" --log error ingest "$OUT/day.yaml" > /dev/null 2>> "$OUT/day-runs.log" \
    || { tail "$OUT/day-runs.log" >&2; exit 1; }
  "$BIN/weir" --log error process "$OUT/day.yaml" > /dev/null 2>> "$OUT/day-runs.log" \
    || { tail "$OUT/day-runs.log" >&2; exit 1; }
  slowest=$(python3 -c "print(max($slowest, $(date +%s.%N) - $t0))")
done
runs_s=$(python3 -c "print(f'{$(date +%s.%N) - $began:.1f}')")

/usr/bin/time -v "$BIN/weir" --log warn maintain "$OUT/day.yaml" --report "$OUT/report-day-maintain.json" \
  2> "$OUT/time-day-maintain.txt" || { cat "$OUT/time-day-maintain.txt" >&2; exit 1; }
python3 - "$OUT/time-day-maintain.txt" "$OUT/report-day-maintain.json" "$data/.summary.json" "$runs_s" "$slowest" <<'PY'
import json, re, sys
time_txt, report_path, summary_path, runs_s, slowest = sys.argv[1:]
t = open(time_txt).read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
summary = json.load(open(summary_path))
stage = json.load(open(report_path))["stages"][0]
print("== weir maintain-day bench")
print(f"capture_files: {summary['files']}")
print(f"events: {summary['events']}")
print(f"runs_s: {runs_s}")
print(f"slowest_run_s: {float(slowest):.2f}")
print(f"maintain_wall_s: {secs:.2f}")
print(f"maintain_cpu_s: {cpu:.2f}")
print(f"maintain_peak_rss_mb: {int(field('Maximum resident set size (kbytes)')) / 1024:.0f}")
for a in stage["maintenance"]:
    print(f"{a['table']}.{a['action']}: {a['outcome']}, files {a['files_before']} -> {a['files_after']}, "
          f"MB {a['bytes_before'] / 1e6:.1f} -> {a['bytes_after'] / 1e6:.1f}, {a['duration_ms'] / 1000:.2f} s")
print("== end")
PY
