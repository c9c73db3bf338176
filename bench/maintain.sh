#!/usr/bin/env bash
# Maintain benchmark: the 1M-event capture data of bench/stages.sh ingested
# and processed in many small commits (as frequent scheduled runs make
# them), then `weir maintain` with the example pipeline's policies (raw
# retention, compaction, processed z-ordered by userId and eventTimestamp,
# full vacuum, checkpoints). Prints one stable block: the run's wall time,
# CPU seconds, peak RSS, and per table and action the files before and after
# and the time taken.
#
#   bench/maintain.sh                        # 1M events, 2 MiB ingest commits
#   EVENTS=10000000 COMMIT_BYTES=8388608 bench/maintain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
COMMIT_BYTES=${COMMIT_BYTES:-2097152}
PARTITIONS=${PARTITIONS:-32}
FILES_PER_PARTITION=${FILES_PER_PARTITION:-72}
CODEC=${CODEC:-deflate}
OUT=${OUT:-bench/out}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
cargo build --release --locked -p weir-jobs --bins >&2
BIN=$CARGO_TARGET_DIR/release

per_file=$(( (EVENTS + PARTITIONS * FILES_PER_PARTITION - 1) / (PARTITIONS * FILES_PER_PARTITION) ))
mkdir -p "$OUT"
data="$OUT/capture-$EVENTS-$CODEC"
if [[ ! -f $data/.summary.json ]]; then
  rm -rf "$data"
  "$BIN/weir-capture-gen" --out "$data" --events "$EVENTS" --partitions "$PARTITIONS" \
    --events-per-file "$per_file" --codec "$CODEC" --seed 7 --defect-ppm 14000 --duplicate-ppm 20000 \
    > "$data.summary.tmp"
  mv "$data.summary.tmp" "$data/.summary.json"
fi

lake=$(realpath "$OUT")/maintain-lake
rm -rf "$lake"
cat > "$OUT/maintain.yaml" <<YAML
name: bench
source:
  capture:
    url: $(realpath "$data")
body:
  schema: $(realpath schemas/user_event.avsc)
tables:
  raw: {path: $lake/raw}
  processed: {path: $lake/processed}
  quarantine: {path: $lake/quarantine}
ingest:
  commit_bytes: $COMMIT_BYTES
YAML
# The example's process section (rules, PII, dedup) and maintain policies.
sed -n '/^process:/,/^# Curated tables/p' pipelines/user_events.yaml | sed '$d' >> "$OUT/maintain.yaml"
sed -n '/^maintain:/,$p' pipelines/user_events.yaml >> "$OUT/maintain.yaml"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}
"$BIN/weir" --log warn ingest "$OUT/maintain.yaml" > /dev/null 2>&1
"$BIN/weir" --log warn process "$OUT/maintain.yaml" > /dev/null 2>&1

/usr/bin/time -v "$BIN/weir" --log warn maintain "$OUT/maintain.yaml" --report "$OUT/report-maintain.json" \
  2> "$OUT/time-maintain.txt" || { cat "$OUT/time-maintain.txt" >&2; exit 1; }
python3 - "$OUT/time-maintain.txt" "$OUT/report-maintain.json" "$EVENTS" "$COMMIT_BYTES" <<'PY'
import json, re, sys
time_txt, report_path, events, commit_bytes = sys.argv[1:]
t = open(time_txt).read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
stage = json.load(open(report_path))["stages"][0]
print("== weir maintain bench")
print(f"events: {events}")
print(f"ingest_commit_bytes: {commit_bytes}")
print(f"wall_s: {secs:.2f}")
print(f"cpu_s: {cpu:.2f}")
print(f"peak_rss_mb: {rss_mb:.0f}")
for a in stage["maintenance"]:
    print(f"{a['table']}.{a['action']}: {a['outcome']}, files {a['files_before']} -> {a['files_after']}, "
          f"MB {a['bytes_before'] / 1e6:.1f} -> {a['bytes_after'] / 1e6:.1f}, {a['duration_ms'] / 1000:.2f} s")
print("== end")
PY
