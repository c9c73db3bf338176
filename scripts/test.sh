#!/usr/bin/env bash
# Runs Weir's whole test suite: unit tests, real Delta tables on disk, the
# weir binary under crashes. This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest (once)..." >&2
  cargo install cargo-nextest --locked
fi
exec cargo nextest run --workspace --locked --no-fail-fast "$@"
