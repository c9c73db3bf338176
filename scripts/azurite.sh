# Sourced by scripts/test.sh and bench/stages.sh: `start_azurite` installs
# Azurite (the Azure Storage emulator) from npm once, starts its blob service
# in memory on a free port of 127.0.0.1, exports WEIR_AZURITE_BLOB_URL, and
# stops it by its own pid when the calling shell exits.
# Pinned: 3.36+ needs Node >= 21; 3.35 needs --skipApiVersionCheck for the
# API version current Azure SDKs send.
start_azurite() {
  AZURITE_VERSION=3.35.0
  AZURITE_DIR="${WEIR_AZURITE_DIR:-$HOME/.cache/weir-azurite}"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      apt-get update -qq && apt-get install -y -qq nodejs npm
    else
      echo "azurite: Node.js and npm are needed for Azurite (apt-get install nodejs npm)" >&2; exit 1
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
    if ! kill -0 "$AZURITE_PID" 2>/dev/null; then cat "$AZURITE_LOG" >&2; echo "azurite: did not start" >&2; exit 1; fi
    sleep 0.1
  done
  grep -q "successfully listens" "$AZURITE_LOG" || { cat "$AZURITE_LOG" >&2; echo "azurite: did not start" >&2; exit 1; }
  export WEIR_AZURITE_BLOB_URL="http://127.0.0.1:$AZURITE_PORT"
}
