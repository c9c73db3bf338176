#!/usr/bin/env bash
# Incremental benchmark: what one scheduled `weir run` costs once the lake
# is large. A lake already holding BASE events spread over 7 days of capture
# windows receives NEW events (the next windows of the same partitions, the
# same generator and seed, so sequence numbers carry on); that run is timed
# next to the same new files run into an empty lake. The ratio is the
# per-run cost the lake's size adds.
#
#   bench/incremental.sh                          # 10M in the lake, 100k new
#   BASE=2000000 NEW=50000 bench/incremental.sh   # smaller
#   BUILD=0 ...                                   # binaries as they are
#
# Prints `key: value` lines between "== weir incremental bench" and
# "== end" (stage times from the run reports, wall/CPU/RSS from
# /usr/bin/time -v).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-10000000}
NEW=${NEW:-100000}
PARTITIONS=${PARTITIONS:-32}
PER_FILE=${PER_FILE:-435}
OUT=${OUT:-bench/out}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}
[[ ${BUILD:-1} == 0 ]] || cargo build --release --locked -p weir-jobs --bins >&2
BIN=$CARGO_TARGET_DIR/release
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

per_window=$(( PARTITIONS * PER_FILE ))
base_windows=$(( (BASE + per_window - 1) / per_window ))
new_windows=$(( (NEW + per_window - 1) / per_window ))
# The base's windows span 7 days.
window_secs=$(( 7 * 86400 / base_windows ))
gen() { # DIR WINDOWS
  if [[ ! -f $1/.summary.json ]]; then
    rm -rf "$1"
    "$BIN/weir-capture-gen" --out "$1" --events $(( $2 * per_window )) --partitions "$PARTITIONS" \
      --events-per-file "$PER_FILE" --window-secs "$window_secs" --codec deflate --seed 11 \
      --defect-ppm 14000 --duplicate-ppm 20000 > "$1.summary.tmp"
    mv "$1.summary.tmp" "$1/.summary.json"
  fi
}
all="$OUT/incr-all-$BASE-$NEW"
base="$OUT/incr-base-$BASE"
gen "$base" "$base_windows"
gen "$all" $(( base_windows + new_windows ))

# Same seed: the first windows of `all` are the base's files byte for byte.
new_list="$OUT/incr-new-files.txt"
(cd "$all" && find . -name '*.avro' | sort) > "$OUT/incr-all.txt"
(cd "$base" && find . -name '*.avro' | sort) > "$OUT/incr-base.txt"
comm -23 "$OUT/incr-all.txt" "$OUT/incr-base.txt" > "$new_list"
link() { # FROM TO < list
  while read -r f; do mkdir -p "$2/$(dirname "$f")"; ln -f "$1/$f" "$2/$f"; done
}

pipeline() { # NAME CAPTURE LAKE
  {
    cat <<YAML
name: bench
source:
  capture:
    url: $2
body:
  schema: $(realpath schemas/user_event.avsc)
tables:
  raw: {path: $3/raw}
  processed: {path: $3/processed}
  quarantine: {path: $3/quarantine}
  quality_metrics: {path: $3/quality}
  erasure_log: {path: $3/audit/erasure_log}
YAML
    sed -n '/^process:/,$p' pipelines/user_events.yaml | sed "s|\${WEIR_LAKE:-lake}|$3|"
  } > "$OUT/$1.yaml"
  mkdir -p "$OUT/user_events" && cp pipelines/user_events/*.sql "$OUT/user_events/"
}

# The large lake: the base files, run once (not timed), then the new files.
big_capture="$OUT/incr-capture-big"
big_lake="$OUT/incr-lake-big"
pipeline incr-big "$big_capture" "$big_lake"
if [[ ! -f $big_lake/.base-done ]]; then
  rm -rf "$big_capture" "$big_lake"
  link "$base" "$big_capture" < "$OUT/incr-base.txt"
  "$BIN/weir" --log warn run "$OUT/incr-big.yaml" --report "$OUT/report-incr-base.json" >/dev/null
  # Kept so later runs of this script start from the same lake: the lake is
  # copied, the new files are added to the copy.
  touch "$big_lake/.base-done"
fi
work_capture="$OUT/incr-capture-work"
work_lake="$OUT/incr-lake-work"
rm -rf "$work_capture" "$work_lake"
cp -al "$big_capture" "$work_capture"
cp -r "$big_lake" "$work_lake"
link "$all" "$work_capture" < "$new_list"
pipeline incr-work "$work_capture" "$work_lake"

empty_capture="$OUT/incr-capture-empty"
empty_lake="$OUT/incr-lake-empty"
rm -rf "$empty_capture" "$empty_lake"
link "$all" "$empty_capture" < "$new_list"
pipeline incr-empty "$empty_capture" "$empty_lake"

for name in empty work; do
  /usr/bin/time -v "$BIN/weir" --log warn run "$OUT/incr-$name.yaml" --report "$OUT/report-incr-$name.json" \
    2> "$OUT/time-incr-$name.txt" >/dev/null || { cat "$OUT/time-incr-$name.txt" >&2; exit 1; }
done

python3 - "$OUT" "$BASE" "$(wc -l < "$new_list")" <<'PY'
import json, re, sys
out, base, new_files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def timing(name):
    t = open(f"{out}/time-incr-{name}.txt").read()
    field = lambda k: re.search(re.escape(k) + r":\s*(.+)", t).group(1).strip()
    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return wall, cpu, int(field("Maximum resident set size (kbytes)")) / 1024
base_report = json.load(open(f"{out}/report-incr-base.json"))
print("== weir incremental bench")
print(f"lake_events: {base_report['stages'][0]['events_written']}")
print(f"new_files: {new_files}")
rows = {}
for name, label in (("empty", "empty_lake"), ("work", "large_lake")):
    r = json.load(open(f"{out}/report-incr-{name}.json"))
    wall, cpu, rss = timing(name)
    rows[name] = wall
    st = {s["stage"]: s for s in r["stages"]}
    print(f"{label}_new_events: {st['ingest']['events_written']}")
    print(f"{label}_ingest_files_read: {st['ingest']['files_read']}")
    print(f"{label}_ingest_events_read: {st['ingest']['events_read']}")
    for s in ("ingest", "process", "curate"):
        print(f"{label}_{s}_s: {st[s]['duration_ms'] / 1000:.2f}")
    print(f"{label}_wall_s: {wall:.2f}")
    print(f"{label}_cpu_s: {cpu:.2f}")
    print(f"{label}_peak_rss_mb: {rss:.0f}")
print(f"cost_ratio: {rows['work'] / rows['empty']:.2f}")
print("== end")
PY
