#!/usr/bin/env bash
# Runs a weir job for a Data Factory Custom activity (Azure Batch) and applies
# the exit-code contract that Data Factory's own retry cannot: exit 75
# (retryable: storage down, a lost commit race, a table held by maintain) is
# retried here with backoff; 2 (configuration) and 3 (data problem) fail the
# activity at once, so the activity's retry stays 0 and a human is alerted
# by the pipeline's failure.
#
#   run-with-retry.sh JOB PIPELINE [weir options...]
#
# Environment: WEIR_BIN (default weir), WEIR_RETRIES (default 4),
# WEIR_RETRY_DELAY seconds before the first retry, doubled each time
# (default 30).
set -uo pipefail
bin=${WEIR_BIN:-weir}
retries=${WEIR_RETRIES:-4}
delay=${WEIR_RETRY_DELAY:-30}
attempt=0
while true; do
  "$bin" --log-format json "$@"
  code=$?
  if [[ $code -ne 75 || $attempt -ge $retries ]]; then
    exit $code
  fi
  attempt=$((attempt + 1))
  echo "weir exited 75 (retryable); attempt $((attempt + 1)) of $((retries + 1)) in ${delay}s" >&2
  sleep "$delay"
  delay=$((delay * 2))
done
