"""Weir's user_events pipeline on Apache Airflow.

- ``weir_user_events`` (every 5 minutes): ingest by shard in parallel (dynamic
  task mapping, one mapped task per ``--shard INDEX/COUNT``), then process,
  then curate. One DAG run at a time: process and curate are one writer per
  table.
- ``weir_user_events_maintain`` (daily): retention, compaction, vacuum,
  checkpoints.

Exit codes (the contract in Weir's README): 0 is success; 2 (configuration)
and 3 (data problem) fail the task with no retry, since a human must look;
75 (retryable: storage down, a lost commit race, a table held by maintain) and
anything else fail it with the DAG's retries.

Settings, from the workers' environment or Airflow Variables of the same
name: ``WEIR_BIN`` (the binary, default ``weir``), ``WEIR_PIPELINE`` (the
pipeline file), ``WEIR_SHARDS`` (ingest workers, default 4). Secrets (the PII
key, ``AZURE_*`` credentials) stay in the workers' environment.
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta

from airflow.decorators import dag, task
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.models import Variable

# weir's exit codes.
EXIT_OK, EXIT_CONFIG, EXIT_DATA, EXIT_RETRYABLE = 0, 2, 3, 75


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or Variable.get(name, default_var=default)
    if value is None:
        raise AirflowFailException(f"set {name} (worker environment or Airflow Variable)")
    return value


def run_weir(*args: str) -> dict:
    """Runs one weir job; returns a summary of its run report (an XCom)."""
    command = [setting("WEIR_BIN", "weir"), "--log-format", "json", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    # weir logs JSON lines on stderr: they become the task log.
    for line in done.stderr.splitlines()[-2000:]:
        print(line)
    code = done.returncode
    if code == EXIT_OK:
        report = json.loads(done.stdout)
        return {
            "run_id": report["run_id"],
            "outcome": report["outcome"],
            "stages": {s["stage"]: s["events_written"] for s in report["stages"]},
        }
    what = " ".join(args)
    if code in (EXIT_CONFIG, EXIT_DATA):
        kind = "configuration error" if code == EXIT_CONFIG else "data problem"
        raise AirflowFailException(f"weir {what}: {kind} (exit {code}); not retried, see the log above")
    raise AirflowException(f"weir {what}: exit {code}{' (retryable)' if code == EXIT_RETRYABLE else ''}")


DEFAULTS = {"retries": 3, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}


@dag(
    dag_id="weir_user_events",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["weir"],
)
def weir_user_events():
    @task
    def shards() -> list[str]:
        n = int(setting("WEIR_SHARDS", "4"))
        return [f"{i}/{n}" for i in range(n)]

    @task
    def ingest(shard: str) -> dict:
        return run_weir("ingest", setting("WEIR_PIPELINE"), "--shard", shard)

    @task
    def process() -> dict:
        return run_weir("process", setting("WEIR_PIPELINE"))

    @task
    def curate() -> dict:
        return run_weir("curate", setting("WEIR_PIPELINE"))

    ingest.expand(shard=shards()) >> process() >> curate()


@dag(
    dag_id="weir_user_events_maintain",
    schedule="17 3 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    tags=["weir"],
)
def weir_user_events_maintain():
    @task
    def maintain() -> dict:
        return run_weir("maintain", setting("WEIR_PIPELINE"))

    maintain()


weir_user_events()
weir_user_events_maintain()
