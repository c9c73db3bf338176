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
# Rebuilt when scripts/requirements.txt changes.
if ! cmp -s scripts/requirements.txt "$VENV/.weir-requirements" \
   || ! "$VENV/bin/python" -c "import deltalake, pyarrow, polars, fastavro" >/dev/null 2>&1; then
  echo "creating the Python reader venv in $VENV (once)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$VENV/.weir-requirements"
fi
export WEIR_PYTHON="$VENV/bin/python"

# Apache Airflow for the DAG test, in its own venv (its dependencies are
# pinned in orchestration/airflow/requirements.txt); rebuilt when they change.
AIRFLOW_VENV="${WEIR_AIRFLOW_VENV:-$HOME/.cache/weir-airflow}"
if ! cmp -s orchestration/airflow/requirements.txt "$AIRFLOW_VENV/.weir-requirements" \
   || ! "$AIRFLOW_VENV/bin/airflow" version >/dev/null 2>&1; then
  echo "creating the Airflow venv in $AIRFLOW_VENV (once, ~2 minutes)..." >&2
  rm -rf "$AIRFLOW_VENV"
  python3 -m venv "$AIRFLOW_VENV"
  "$AIRFLOW_VENV/bin/pip" install --quiet --disable-pip-version-check -r orchestration/airflow/requirements.txt
  cp orchestration/airflow/requirements.txt "$AIRFLOW_VENV/.weir-requirements"
fi
export WEIR_AIRFLOW="$AIRFLOW_VENV/bin/airflow"

# Azurite, the Azure Storage emulator, for the storage tests (they fail,
# never skip, without it): installed once, started on a free port, stopped
# by its pid when the tests end.
source scripts/azurite.sh
start_azurite

cargo nextest run --workspace --locked --no-fail-fast "$@"
