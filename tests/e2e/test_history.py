"""Run history on the real stack: a worker serving the emulators records committed and failed runs
in `_etl_runs`, and `etl-worker runs` shows them, filtered, and per-table health."""

from __future__ import annotations

import os
import sys
import time

from google.cloud import bigquery

from tests import forkserver
from tests.conftest import PROJECT
from tests.e2e.sources import SeededSource
from tests.e2e.stack import Stack, serving

HISTORY_WAIT_S = 60.0


def runs_cli(stack: Stack, *args: str) -> str:
    env = {**os.environ, **stack.env} if stack.env else {**os.environ, **_env_of(stack)}
    result = forkserver.run([sys.executable, "-m", "worker", "runs", *args], env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _env_of(stack: Stack) -> dict[str, str]:
    s = stack.settings
    return {"GCP_PROJECT_ID": s.gcp_project_id, "BIGQUERY_DATASET": s.bigquery_dataset,
            "BIGQUERY_EMULATOR_HOST": s.bigquery_emulator_host or "",
            "PUBSUB_EMULATOR_HOST": s.pubsub_emulator_host or ""}


def history(bq_client: bigquery.Client, dataset: str) -> list[tuple[str, str, bool | None]]:
    query = (f"SELECT run_id, event_type, will_retry FROM `{PROJECT}.{dataset}._etl_runs` "
             "ORDER BY occurred_at, seq")
    return [tuple(row.values()) for row in bq_client.query(query).result()]


def wait_history(bq_client: bigquery.Client, dataset: str, count: int) -> list[tuple[str, str, bool | None]]:
    deadline = time.monotonic() + HISTORY_WAIT_S
    while time.monotonic() < deadline:
        try:
            rows = history(bq_client, dataset)
        except Exception:  # not created yet
            rows = []
        if len(rows) >= count:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"history has {history(bq_client, dataset)}")


def test_committed_and_failed_runs_are_recorded_and_listed(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    dataset = stack.settings.bigquery_dataset
    with serving(stack.settings):
        stack.publish(orders_source.request("catalog", etl_run_id=801))
        stack.wait_terminal("etl-run-801")
        stack.publish(orders_source.request("catalog", etl_run_id=802, source_table_name="missing"))
        stack.wait_terminal("etl-run-802")
    # Then every outcome is in the history, the failure with its type and whether it retries
    rows = wait_history(bq_client, dataset, 3)
    assert ("etl-run-801", "run.started", None) in rows and ("etl-run-801", "run.completed", None) in rows
    assert ("etl-run-802", "run.failed", False) in rows
    assert not [r for r in rows if r[1] == "run.progress"]
    # And `runs` lists both, failures too, and filters them
    listing = runs_cli(stack)
    assert "etl-run-801" in listing and "etl-run-802" in listing
    failed_line = next(line for line in listing.splitlines() if "etl-run-802" in line)
    assert "failed" in failed_line and "SourceSchemaError" in failed_line
    only_failed = runs_cli(stack, "--outcome", "failed")
    assert "etl-run-802" in only_failed and "etl-run-801" not in only_failed
    assert "etl-run-801" not in runs_cli(stack, "--table", "missing_table_name")
    # And the per-table health says how the table is doing
    summary = runs_cli(stack, "--summary", "--since", "1d")
    orders = next(line for line in summary.splitlines() if " orders " in f" {line} ")
    cells = orders.split()  # source, table, runs, rate, last success (date time), median, rows/day, now
    assert cells[:4] == ["7", "orders", "2", "50%"]  # one committed of two finished
    assert cells[-2:] == ["250", "failed"]  # 250 rows in the day; the newest run failed
