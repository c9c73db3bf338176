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
# never skip, without it): installed once, started on a free port, stopped
# by its pid when the tests end.
source scripts/azurite.sh
start_azurite

cargo nextest run --workspace --locked --no-fail-fast "$@"
