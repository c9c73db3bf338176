#!/usr/bin/env bash
# Runs Weir's whole test suite: unit tests, real Delta tables on disk, the
# weir binary under crashes. This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (once)..." >&2
  cargo install cargo-nextest --locked
fi
# Independent readers (Python deltalake) in a venv kept between runs.
VENV="${WEIR_VENV:-$HOME/.cache/weir-venv}"
if ! "$VENV/bin/python" -c "import deltalake, pyarrow, polars" >/dev/null 2>&1; then
  echo "creating the Python reader venv in $VENV (once)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi
export WEIR_PYTHON="$VENV/bin/python"

# Azurite, the Azure Storage emulator, for the storage tests (they fail,
# never skip, without it). Pinned: 3.36+ needs Node >= 21. Blob service only,
# in memory, on a free port; stopped by its own pid when the tests end.
AZURITE_VERSION=3.35.0
AZURITE_DIR="${WEIR_AZURITE_DIR:-$HOME/.cache/weir-azurite}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
  else
    echo "test: Node.js and npm are needed for Azurite (apt-get install nodejs npm)" >&2; exit 1
  fi
fi
AZURITE_MAIN="$AZURITE_DIR/node_modules/azurite/dist/src/blob/main.js"
if ! grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null; then
  echo "installing azurite@$AZURITE_VERSION into $AZURITE_DIR (once)..." >&2
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2
fi
AZURITE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AZURITE_LOG=$(mktemp -t weir-azurite.XXXXXX.log)
node "$AZURITE_MAIN" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" --inMemoryPersistence \
  --disableTelemetry --skipApiVersionCheck --silent >"$AZURITE_LOG" 2>&1 &
AZURITE_PID=$!
trap 'kill "$AZURITE_PID" 2>/dev/null || true; wait "$AZURITE_PID" 2>/dev/null || true; rm -f "$AZURITE_LOG"' EXIT
for _ in $(seq 1 100); do
  if grep -q "successfully listens" "$AZURITE_LOG" 2>/dev/null; then break; fi
  if ! kill -0 "$AZURITE_PID" 2>/dev/null; then cat "$AZURITE_LOG" >&2; echo "test: Azurite did not start" >&2; exit 1; fi
  sleep 0.1
done
grep -q "successfully listens" "$AZURITE_LOG" || { cat "$AZURITE_LOG" >&2; echo "test: Azurite did not start" >&2; exit 1; }
export WEIR_AZURITE_BLOB_URL="http://127.0.0.1:$AZURITE_PORT"

cargo nextest run --workspace --locked --no-fail-fast "$@"
