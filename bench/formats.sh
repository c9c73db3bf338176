#!/usr/bin/env bash
# Process throughput per body format: the same payment transactions as
# plain JSON, gzipped JSON, binary Avro, Azure Schema Registry Avro and Confluent Avro
# (generated once per format by jobs/tests/python/body_formats.py into
# bench/out/formats-FORMAT-EVENTS), ingested, then `weir process` timed.
#
#   bench/formats.sh                    # 1M events per format
#   EVENTS=200000 bench/formats.sh      # smaller
#   FORMATS="avro confluent" bench/formats.sh
#   BUILD=0 bench/formats.sh            # use the release binary as built
#
# Prints one `key: value` block per format.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
OUT=${OUT:-bench/out}
FORMATS=${FORMATS:-json-plain json avro avro-schema-registry confluent}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export WEIR_PII_KEY=${WEIR_PII_KEY:-bench-key-not-a-secret-0123456789}
if [[ ${BUILD:-1} != 0 ]]; then
  cargo build --release --locked --bin weir >&2
fi
BIN=$(realpath "$CARGO_TARGET_DIR/release/weir")
VENV="${WEIR_PEER_VENV:-$HOME/.cache/weir-peer}"
if ! cmp -s bench/peer/requirements.txt "$VENV/.weir-requirements"; then
  echo "creating the peer's venv in $VENV (once)..." >&2
  rm -rf "$VENV" && python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/peer/requirements.txt
  cp bench/peer/requirements.txt "$VENV/.weir-requirements"
fi
for format in $FORMATS; do
  dir="$OUT/formats-$format-$EVENTS"
  if [[ ! -f $dir/pipeline.yaml ]]; then
    echo "generating $EVENTS $format events in $dir (once)..." >&2
    rm -rf "$dir" && mkdir -p "$dir"
    "$VENV/bin/python" jobs/tests/python/body_formats.py bench "$dir" "$format" "$EVENTS"
  fi
  rm -rf "$dir/lake"
  (cd "$dir" && "$BIN" --log warn ingest pipeline.yaml > report-ingest.json)
  (cd "$dir" && /usr/bin/time -v "$BIN" --log warn process pipeline.yaml > report-process.json 2> time-process.txt)
  python3 - "$dir" "$format" <<'PY'
import json, re, sys
d, fmt = sys.argv[1], sys.argv[2]
t = open(f"{d}/time-process.txt").read()
field = lambda n: re.search(re.escape(n) + r":\s*(.+)", t).group(1).strip()
parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
wall = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
r = json.load(open(f"{d}/report-process.json"))["stages"][0]
print(f"== process bench: {fmt}")
print(f"events: {r['events_read']}")
print(f"events_written: {r['events_written']}")
print(f"events_quarantined: {r.get('quality', {}).get('events_quarantined')}")
print(f"wall_s: {wall:.2f}")
print(f"events_per_s: {r['events_read'] / wall:,.0f}")
print(f"cpu_us_per_event: {cpu / max(r['events_read'], 1) * 1e6:.2f}")
print(f"peak_rss_mb: {int(field('Maximum resident set size (kbytes)')) / 1024:.0f}")
print("== end")
PY
done
