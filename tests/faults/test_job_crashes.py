"""A job of three tables (customers merged by key, orders appended by window, order_lines replaced
whole) whose worker is killed (SIGKILL) between its tables, inside a later table's staging, and
around its one commit; a fresh worker takes the redelivery over. Judged as the one-table crash suite
is (test_crash_recovery.py): only once the fresh worker has acked a later delivery, then

- every destination equals its source table, row by row (nothing lost, nothing twice: the merge
  and the append were applied once, the replaced table holds no leftover of the killed attempt);
- the ledger holds one row per table for the run, all three from the same delivery: the killed one
  when its commit had reached BigQuery, the fresh one otherwise (the tables are never split
  between deliveries);
- Django's view ends with one run.completed (one event id) listing the three tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import bigquery

from tests.e2e.oneshot import RunOnce, run_once
from tests.e2e.shop import Shop, seed_shop
from tests.e2e.sources import fresh_database
from tests.e2e.stack import Stack
from tests.faults.harness import (
    COMMITTED_BY_THE_KILLED,
    CommitHold,
    WorkerProcess,
    kill_then_redeliver,
    ledger,
    release_once_redelivered,
)
from worker.faults import JOB_PHASES, PHASES

__all__ = ["run_once"]
FAMILIES, ADDED = 20, 5  # the first job's families; those the killed job has to bring
DESTINATIONS = ("customers", "orders", "order_lines")
# (phase, its N-th passage in the killed process, source): between the tables, inside the third
# table's staging, and at each moment around the commit. One part per table (parts of 150 rows).
SCENARIOS = [
    ("table_staged", 1, "postgresql"),  # customers staged; orders not yet read
    ("table_staged", 2, "mysql"),  # customers and orders staged; order_lines not yet read
    ("staging_loaded", 3, "postgresql"),  # order_lines' part loaded; the job not yet verified
    ("before_commit", 1, "mysql"),
    ("commit_submitted", 1, "postgresql"),  # the commit job goes on running past the redelivery
    ("after_commit", 1, "mysql"),
]
assert {phase for phase, _, _ in SCENARIOS} <= set(PHASES) | set(JOB_PHASES)


@pytest.fixture
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    yield seed_shop(*fresh_database(request), FAMILIES)


def copies(client: bigquery.Client, dataset: str) -> dict[str, list[int]]:
    return {table: [row["id"] for row in client.query(
        f"SELECT id FROM `{client.project}.{dataset}.{table}` ORDER BY id").result()]
        for table in DESTINATIONS}


@pytest.mark.parametrize(("phase", "occurrence", "shop"),
                         [pytest.param(p, n, d, id=f"{p}-{n}-{d}") for p, n, d in SCENARIOS],
                         indirect=["shop"])
def test_a_job_whose_worker_is_killed_is_applied_once_and_whole(
    phase: str, occurrence: int, shop: Shop, run_once: RunOnce, crash_stack: Stack,
    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    dataset = crash_stack.settings.bigquery_dataset
    # Given destinations a first job filled (so the merge and the append have rows to get wrong)
    run_once(shop.job(1), "etl-run-1")
    assert copies(bq_client, dataset) == {table: shop.ids_of(table) for table in DESTINATIONS}
    shop.add_families(ADDED)
    # When the next job's worker dies at the phase, and a fresh one takes the redelivery over
    number = uuid.uuid4().int % 10**12
    run_id = f"etl-run-{number}"
    faults = {"ETL_CRASH_AT": phase, "ETL_CRASH_OCCURRENCE": str(occurrence)}
    redelivered = None
    if phase == "commit_submitted":
        hold: CommitHold = request.getfixturevalue("commit_hold")
        faults["ETL_COMMIT_HOLD_DIR"] = str(hold.directory)
        redelivered = release_once_redelivered(hold, fail=False)
    takeover = kill_then_redeliver(crash_stack, shop.job(number), run_id, faults, workers, tmp_path,
                                   redelivered)
    context = takeover.context
    assert takeover.died_at.startswith(phase), context
    completed = takeover.events.wait_completed_after(run_id, takeover.killed_at)
    # Then every destination equals its source table
    assert copies(bq_client, dataset) == {table: shop.ids_of(table) for table in DESTINATIONS}, context
    # And the ledger has the job's three tables, all from the one delivery whose commit is in force
    entries = sorted(ledger(bq_client, dataset, run_id), key=lambda e: e["table_index"])
    assert [e["dest_table"] for e in entries] == list(DESTINATIONS), (context, entries)
    committer = takeover.killed_attempt if phase in COMMITTED_BY_THE_KILLED else takeover.fresh.attempt
    assert {e["attempt"] for e in entries} == {committer}, (context, entries)
    # And Django sees one run.completed, with each table's rows of this job
    assert {p.event["event_type"] for p in completed} == {"run.completed"}, (context, completed)
    assert len({p.event["event_id"] for p in completed}) == 1, (context, completed)
    tables = completed[-1].event["tables"]
    assert [(t["dest_table"], t["rows_loaded"]) for t in tables] == [
        ("customers", ADDED), ("orders", ADDED), ("order_lines", 2 * (FAMILIES + ADDED))], context
