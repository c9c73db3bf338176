#!/usr/bin/env bash
# Runs one weir job from cron: one run at a time per (pipeline, job), JSON
# logs appended to a file, the run report kept, Prometheus metrics for the
# node_exporter textfile collector, and the exit code passed on.
#
#   weir-cron.sh JOB PIPELINE [weir options...]
#   e.g. weir-cron.sh run /opt/weir/pipelines/user_events.yaml
#
# Environment (all optional):
#   WEIR_BIN          the weir binary (default: `weir` on PATH)
#   WEIR_STATE_DIR    locks/, logs/ and reports/ go here (default /var/lib/weir)
#   WEIR_METRICS_DIR  the textfile collector's folder (default $WEIR_STATE_DIR/metrics)
#   WEIR_ENV_FILE     VAR=value lines sourced first: secrets (PII key, AZURE_*),
#                     kept out of the crontab (mode 600)
#   WEIR_KEEP_REPORTS reports kept per job (default 500)
#
# Exit codes: weir's (0 ok, 2 config, 3 data problem, 75 retryable, 1
# internal); a run skipped because the previous one still runs exits 0 and
# says so in the log. cron mails anything on stderr: one line per failure.
set -uo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 JOB PIPELINE [weir options...]" >&2
  exit 2
fi
job=$1 pipeline=$2
shift 2
state=${WEIR_STATE_DIR:-/var/lib/weir}
metrics=${WEIR_METRICS_DIR:-$state/metrics}
bin=${WEIR_BIN:-weir}
name=$(basename "$pipeline" .yaml)
mkdir -p "$state/locks" "$state/logs" "$state/reports/$name" "$metrics" || exit 75
if [[ -n ${WEIR_ENV_FILE:-} ]]; then
  set -a
  # shellcheck disable=SC1090
  . "$WEIR_ENV_FILE" || { echo "weir-cron: cannot read $WEIR_ENV_FILE" >&2; exit 2; }
  set +a
fi
log="$state/logs/$name-$job.log"
exec 9>"$state/locks/$name-$job.lock"
if ! flock -n 9; then
  printf '{"timestamp":"%s","level":"INFO","fields":{"message":"previous %s run of %s still going; this run skipped"},"target":"weir_cron"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" "$job" "$name" >> "$log"
  exit 0
fi
report="$state/reports/$name/$job-$(date -u +%Y%m%dT%H%M%SZ)-$$.json"
"$bin" --log-format json "$job" "$pipeline" --report "$report" \
  --metrics-file "$metrics/weir_${name}_${job}.prom" "$@" 2>> "$log"
code=$?
# Old reports go; the runs table (tables.runs) keeps the history.
ls -1t "$state/reports/$name/$job-"*.json 2>/dev/null | tail -n +"$(( ${WEIR_KEEP_REPORTS:-500} + 1 ))" | xargs -r rm -f
case $code in
  0) ;;
  3) echo "weir $job $name: data problem (exit 3), see $report" >&2 ;;
  75) echo "weir $job $name: retryable failure (exit 75), the next tick retries; see $log" >&2 ;;
  2) echo "weir $job $name: configuration error (exit 2), fix before the next tick; see $log" >&2 ;;
  *) echo "weir $job $name: failed (exit $code), see $log" >&2 ;;
esac
exit $code
