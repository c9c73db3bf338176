#!/usr/bin/env bash
# Stage benchmark: generates realistic capture files, then times `weir
# ingest` from an empty lake, `weir process` over what was ingested (the
# example pipeline's rules, PII and dedup) and `weir curate` over what was
# processed (the example's two curated tables, computed from scratch), and
# prints one stable block of figures per stage. For curate, `events` is the
# processed rows the models read. Then `weir erase` of 10 data subjects, and
# of 10 others with --purge, each with its own block (rows deleted per table,
# purged files).
#
#   bench/stages.sh                 # 1M events (2,304 deflate files, 32 partitions)
#   EVENTS=10000000 bench/stages.sh # 10M
#   FILES_PER_PARTITION=1 ...       # one large file per partition
#   STAGES=ingest ...               # only these stages (and no erase)
#   PROFILE=dev bench/stages.sh     # without a release build (slower figures)
#   BUILD=0 bench/stages.sh         # the binaries already built, as they are
#   STORAGE=azurite bench/stages.sh # capture files and lake in Azurite (the
#                                   # Azure Storage emulator, in memory)
#
# Output (stable; parse it): `key: value` lines between "== weir <stage>
# bench" and "== end". Figures: wall seconds, events/s, MB/s of capture
# input, user+system CPU seconds, peak RSS in MB (from /usr/bin/time -v).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
PARTITIONS=${PARTITIONS:-32}
FILES_PER_PARTITION=${FILES_PER_PARTITION:-72}
STAGES=${STAGES:-ingest process curate}
CODEC=${CODEC:-deflate}
PROFILE=${PROFILE:-release}
OUT=${OUT:-bench/out}
export STORAGE=${STORAGE:-local}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"

# BUILD=0 measures the binaries already in the target dir as they are.
if [[ $PROFILE == release ]]; then
  [[ ${BUILD:-1} == 0 ]] || cargo build --release --locked -p weir-jobs --bins >&2
  BIN=$CARGO_TARGET_DIR/release
else
  [[ ${BUILD:-1} == 0 ]] || cargo build --locked -p weir-jobs --bins >&2
  BIN=$CARGO_TARGET_DIR/debug
fi

per_file=$(( (EVENTS + PARTITIONS * FILES_PER_PARTITION - 1) / (PARTITIONS * FILES_PER_PARTITION) ))
mkdir -p "$OUT"
data="$OUT/capture-$EVENTS-$CODEC-$per_file"
if [[ ! -f $data/.summary.json ]]; then
  rm -rf "$data"
  "$BIN/weir-capture-gen" --out "$data" --events "$EVENTS" --partitions "$PARTITIONS" \
    --events-per-file "$per_file" --codec "$CODEC" --seed 7 --defect-ppm 14000 --duplicate-ppm 20000 \
    > "$data.summary.tmp"
  mv "$data.summary.tmp" "$data/.summary.json"
fi
bytes=$(du -sb --exclude=.summary.json "$data" | cut -f1)
files=$(find "$data" -name '*.avro' | wc -l)

rm -rf "$OUT/lake"
capture_url=$(realpath "$data")
lake_url=$(realpath "$OUT")/lake
if [[ $STORAGE == azurite ]]; then
  source scripts/azurite.sh
  start_azurite
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=$WEIR_AZURITE_BLOB_URL
  # The same files (same seed), uploaded to the emulator.
  "$BIN/weir-capture-gen" --out az://capture/hub --events "$EVENTS" --partitions "$PARTITIONS" \
    --events-per-file "$per_file" --codec "$CODEC" --seed 7 --defect-ppm 14000 --duplicate-ppm 20000 >/dev/null
  # The generator creates containers in emulator mode: this makes "lake".
  "$BIN/weir-capture-gen" --out az://lake/unused --events 1 --partitions 1 --events-per-file 1 >/dev/null
  capture_url=az://capture/hub
  lake_url=az://lake/bench
fi
cat > "$OUT/bench.yaml" <<YAML
name: bench
source:
  capture:
    url: $capture_url
body:
  schema: $(realpath schemas/user_event.avsc)
tables:
  raw: {path: $lake_url/raw}
  processed: {path: $lake_url/processed}
  quarantine: {path: $lake_url/quarantine}
  quality_metrics: {path: $lake_url/quality}
  erasure_log: {path: $lake_url/audit/erasure_log}
YAML
# The example pipeline's process and curate sections: its rules, PII, dedup
# and curated models.
sed -n '/^process:/,$p' pipelines/user_events.yaml | sed "s|\${WEIR_LAKE:-lake}|$lake_url|" >> "$OUT/bench.yaml"
mkdir -p "$OUT/user_events" && cp pipelines/user_events/*.sql "$OUT/user_events/"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}

for stage in $STAGES; do
  /usr/bin/time -v "$BIN/weir" --log warn "$stage" "$OUT/bench.yaml" --report "$OUT/report-$stage.json" \
    2> "$OUT/time-$stage.txt" || { cat "$OUT/time-$stage.txt" >&2; exit 1; }
  python3 - "$OUT/time-$stage.txt" "$OUT/report-$stage.json" "$bytes" "$files" "$PROFILE" "$stage" <<'PY'
import json, re, sys
time_txt, report_path, nbytes, nfiles, profile, stage_name = sys.argv[1:]
t = open(time_txt).read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
parts = [float(p) for p in wall.split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
report = json.load(open(report_path))
stage = report["stages"][0]
events = stage["events_read"]
if stage_name == "curate":
    processed = json.load(open(report_path.replace("report-curate", "report-process")))
    events = processed["stages"][0]["events_written"]
mb = int(nbytes) / 1e6
print(f"== weir {stage_name} bench")
print(f"profile: {profile}")
print(f"storage: {__import__('os').environ.get('STORAGE', 'local')}")
print(f"files: {nfiles}")
if stage_name == "ingest":
    print(f"events_per_file: {stage['events_read'] // max(1, int(nfiles))}")
print(f"input_mb: {mb:.1f}")
print(f"events: {events}")
print(f"events_written: {stage['events_written']}")
if stage.get("quality"):
    q = stage["quality"]
    print(f"events_quarantined: {q['events_quarantined']}")
    print(f"duplicates_dropped: {q['duplicates_dropped']}")
print(f"commits: {sum(len(t['versions_written']) for t in stage['tables'])}")
for m in stage.get("models", []):
    print(f"table_{m['table']}: {m['mode']}, {m['rows_computed']} rows, {m['duration_ms'] / 1000:.2f} s")
print(f"wall_s: {secs:.2f}")
print(f"events_per_s: {events / secs:,.0f}")
print(f"input_mb_per_s: {mb / secs:.1f}")
print(f"cpu_s: {cpu:.2f}")
print(f"events_per_cpu_s: {events / cpu:,.0f}")
print(f"peak_rss_mb: {rss_mb:.0f}")
print("== end")
PY
done

# Erasure: 10 users, then 10 others with a purge (the generator's users are
# u-1, u-2, ...; each has a few hundred events at 1M). Each rewrites nearly
# all of raw: skipped above 2M events unless ERASE=1.
modes=(plain purge)
if [[ ${ERASE:-} == 0 || ( -z ${ERASE:-} && $EVENTS -gt 2000000 ) || $STAGES != *curate* ]]; then modes=(); fi
for mode in "${modes[@]}"; do
  if [[ $mode == plain ]]; then first=1; flags=(); else first=11; flags=(--purge); fi
  subjects=()
  for i in $(seq "$first" $((first + 9))); do subjects+=(--subject "userId=u-$i"); done
  /usr/bin/time -v "$BIN/weir" --log warn erase "$OUT/bench.yaml" "${subjects[@]}" "${flags[@]}" \
    --report "$OUT/report-erase-$mode.json" 2> "$OUT/time-erase-$mode.txt" || { cat "$OUT/time-erase-$mode.txt" >&2; exit 1; }
  python3 - "$OUT/time-erase-$mode.txt" "$OUT/report-erase-$mode.json" "$mode" <<'PY'
import json, re, sys
time_txt, report_path, mode = sys.argv[1:]
t = open(time_txt).read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
report = json.load(open(report_path))
erasure = report["stages"][-1]["erasure"]
print(f"== weir erase bench{' --purge' if mode == 'purge' else ''}")
print(f"storage: {__import__('os').environ.get('STORAGE', 'local')}")
print(f"subjects: {erasure['subjects']}")
for t in erasure["tables"]:
    extra = f", purged {t['files_purged']} files / {t['bytes_purged'] / 1e6:.1f} MB, {t['log_files_removed']} log files" if mode == "purge" else ""
    print(f"table_{t['table']}: {t['how']}, {t['rows_deleted']} rows deleted{extra}")
for s in report["stages"][:-1]:
    print(f"stage_{s['stage']}: {s['duration_ms'] / 1000:.2f} s")
print(f"erase_s: {report['stages'][-1]['duration_ms'] / 1000:.2f}")
print(f"wall_s: {secs:.2f}")
print(f"cpu_s: {cpu:.2f}")
print(f"peak_rss_mb: {rss_mb:.0f}")
print("== end")
PY
done
