#!/usr/bin/env bash
# Side-by-side benchmark, one command: Weir against the Python jobs a data
# engineer writes instead, on the same capture files: bench/peer/peer.py
# (fastavro -> polars -> deltalake) and bench/peer/duckdb_peer.py (DuckDB's
# avro extension and SQL -> deltalake).
#
#   bench/compare.sh                      # 1M events
#   EVENTS=10000000 bench/compare.sh      # 10M (the polars peer is skipped
#                                         # above 2M: it holds every event in
#                                         # Python objects; PEER=1 forces it.
#                                         # The DuckDB peer runs up to 10M;
#                                         # DUCKDB_PEER=1 forces it, =0 skips)
#   STAGES=0 bench/compare.sh             # only the whole job and the peers
#
# Prints, in the stable `key: value` block format of bench/stages.sh:
# per stage (ingest, process, curate, erase), then `weir run` + `weir
# maintain` from an empty lake (the peers' whole job), then each peer, then
# a comparison block with the ratios (the polars peer's unprefixed, the
# DuckDB peer's prefixed `duckdb_`).
set -euo pipefail
cd "$(dirname "$0")/.."
export EVENTS=${EVENTS:-1000000}
OUT=${OUT:-bench/out}
export OUT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}

# STAGES=0 skips the per-stage blocks (reusing bench/out from an earlier run).
if [[ ${STAGES:-1} != 0 ]]; then
  bench/stages.sh
fi
BIN=$CARGO_TARGET_DIR/release
# The folder bench/stages.sh generated (named by events, codec and events per file).
PARTITIONS=${PARTITIONS:-32}
FILES_PER_PARTITION=${FILES_PER_PARTITION:-72}
per_file=$(( (EVENTS + PARTITIONS * FILES_PER_PARTITION - 1) / (PARTITIONS * FILES_PER_PARTITION) ))
data="$OUT/capture-$EVENTS-${CODEC:-deflate}-$per_file"
bytes=$(du -sb --exclude=.summary.json "$data" | cut -f1)

# /usr/bin/time -v output -> "wall cpu rss_mb"
measure() {
  python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def field(name):
    return re.search(re.escape(name) + r":\s*(.+)", t).group(1).strip()
parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
print(f"{secs:.2f} {cpu:.2f} {int(field('Maximum resident set size (kbytes)')) / 1024:.0f}")
PY
}

# The whole job: run (ingest, process, curate) then maintain, from empty.
lake=$(realpath "$OUT")/lake-whole
rm -rf "$lake"
sed "s|$(realpath "$OUT")/lake/|$lake/|g" "$OUT/bench.yaml" > "$OUT/whole.yaml"
/usr/bin/time -v "$BIN/weir" --log warn run "$OUT/whole.yaml" --report "$OUT/report-whole.json" 2> "$OUT/time-whole.txt" >/dev/null
/usr/bin/time -v "$BIN/weir" --log warn maintain "$OUT/whole.yaml" --report "$OUT/report-whole-maintain.json" 2> "$OUT/time-whole-maintain.txt" >/dev/null
read -r run_wall run_cpu run_rss < <(measure "$OUT/time-whole.txt")
read -r m_wall m_cpu m_rss < <(measure "$OUT/time-whole-maintain.txt")
events=$(python3 -c "import json; print(json.load(open('$OUT/report-whole.json'))['stages'][0]['events_read'])")
processed=$(python3 -c "import json; print(json.load(open('$OUT/report-whole.json'))['stages'][1]['events_written'])")
weir_wall=$(python3 -c "print(f'{$run_wall + $m_wall:.2f}')")
weir_cpu=$(python3 -c "print(f'{$run_cpu + $m_cpu:.2f}')")
weir_rss=$(( run_rss > m_rss ? run_rss : m_rss ))
python3 - <<PY
w, e, mb = $weir_wall, $events, $bytes / 1e6
print("== weir whole-job bench")
print(f"events: {e}")
print(f"events_processed: $processed")
print(f"run_wall_s: $run_wall")
print(f"run_cpu_s: $run_cpu")
print(f"run_peak_rss_mb: $run_rss")
print(f"run_events_per_s: {e / $run_wall:,.0f}")
print(f"run_cpu_us_per_event: {$run_cpu * 1e6 / e:.2f}")
print(f"maintain_wall_s: $m_wall")
print(f"maintain_cpu_s: $m_cpu")
print(f"maintain_peak_rss_mb: $m_rss")
print(f"wall_s: {w:.2f}")
print(f"events_per_s: {e / w:,.0f}")
print(f"input_mb_per_s: {mb / w:.1f}")
print(f"cpu_s: $weir_cpu")
print(f"peak_rss_mb: $weir_rss")
print("== end")
PY

# The peers' venv (one for both), made from bench/peer/requirements.txt
# when that changes.
VENV="${WEIR_PEER_VENV:-$HOME/.cache/weir-peer}"
peer_venv() {
  if ! cmp -s bench/peer/requirements.txt "$VENV/.weir-requirements"; then
    echo "creating the peers' venv in $VENV (once)..." >&2
    rm -rf "$VENV" && python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/peer/requirements.txt
    cp bench/peer/requirements.txt "$VENV/.weir-requirements"
  fi
}

# Each peer's figures, for the comparison block.
: > "$OUT/peers.env"
if [[ ${PEER:-} == 1 || ( -z ${PEER:-} && $EVENTS -le 2000000 ) ]]; then
  peer_venv
  peer_lake=$(realpath "$OUT")/lake-peer
  rm -rf "$peer_lake"
  /usr/bin/time -v "$VENV/bin/python" bench/peer/peer.py "$(realpath "$data")" "$peer_lake" > "$OUT/peer.json" 2> "$OUT/time-peer.txt" \
    || { cat "$OUT/time-peer.txt" >&2; exit 1; }
  read -r p_wall p_cpu p_rss < <(measure "$OUT/time-peer.txt")
  echo "polars $p_wall $p_cpu $p_rss $OUT/peer.json" >> "$OUT/peers.env"
  python3 - <<PY
import json
c = json.load(open("$OUT/peer.json"))
e, w, mb = $events, $p_wall, $bytes / 1e6
print("== python peer bench")
print(f"events: {e}")
print(f"events_processed: {c['processed']}")
print(f"wall_s: {w:.2f}")
print(f"events_per_s: {e / w:,.0f}")
print(f"input_mb_per_s: {mb / w:.1f}")
print(f"cpu_s: $p_cpu")
print(f"peak_rss_mb: $p_rss")
print("== end")
PY
else
  echo "== python peer bench"
  echo "skipped: $EVENTS events (PEER=1 to run it)"
  echo "== end"
fi

# The DuckDB peer holds the capture in DuckDB's memory and deltalake
# buffers its writes: peak RSS was 2.1 GB at 1M events and 3.7 GB at 3M
# (~0.8 GB per million more), so ~9-10 GB at 10M.
if [[ ${DUCKDB_PEER:-} == 1 || ( -z ${DUCKDB_PEER:-} && $EVENTS -le 10000000 ) ]]; then
  peer_venv
  duck_lake=$(realpath "$OUT")/lake-duckdb-peer
  rm -rf "$duck_lake"
  /usr/bin/time -v "$VENV/bin/python" bench/peer/duckdb_peer.py "$(realpath "$data")" "$duck_lake" \
    > "$OUT/duckdb-peer.json" 2> "$OUT/time-duckdb-peer.txt" \
    || { cat "$OUT/time-duckdb-peer.txt" >&2; exit 1; }
  read -r d_wall d_cpu d_rss < <(measure "$OUT/time-duckdb-peer.txt")
  echo "duckdb $d_wall $d_cpu $d_rss $OUT/duckdb-peer.json" >> "$OUT/peers.env"
  python3 - <<PY
import json
c = json.load(open("$OUT/duckdb-peer.json"))
e, w, mb = $events, $d_wall, $bytes / 1e6
print("== duckdb peer bench")
print(f"events: {e}")
print(f"events_processed: {c['processed']}")
print(f"events_quarantined: {c['quarantined']}")
print(f"wall_s: {w:.2f}")
print(f"events_per_s: {e / w:,.0f}")
print(f"input_mb_per_s: {mb / w:.1f}")
print(f"cpu_s: $d_cpu")
print(f"peak_rss_mb: $d_rss")
# read_avro's known faults, found and repaired from the files (0 = none).
print(f"avro_reader: {c['reader']}")
print(f"avro_null_bodies: {c['avro_null_bodies']}")
print(f"avro_missing_rows: {c['avro_missing_rows']}")
print("== end")
PY
else
  echo "== duckdb peer bench"
  echo "skipped: $EVENTS events (DUCKDB_PEER=1 to run it)"
  echo "== end"
fi

if [[ -s $OUT/peers.env ]]; then
  python3 - "$OUT/peers.env" <<PY
import json, sys
print("== comparison")
for line in open(sys.argv[1]):
    name, wall, cpu, rss, counts = line.split()
    wall, cpu, rss, c = float(wall), float(cpu), float(rss), json.load(open(counts))
    prefix = "" if name == "polars" else name + "_"
    print(f"{prefix}wall_ratio: {wall / $weir_wall:.1f}x")
    print(f"{prefix}cpu_ratio: {cpu / $weir_cpu:.1f}x")
    print(f"{prefix}rss_ratio: {rss / $weir_rss:.1f}x")
    print(f"{prefix}same_processed_rows: {c['processed'] == $processed}")
print("== end")
PY
fi
