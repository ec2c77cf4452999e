"""A backfill committed in sub-windows (ETL_CHUNK_ROWS, worker/sub_windows.py) whose worker is
killed (SIGKILL) after a sub-window's commit, in the middle of a sub-window's staging, and between
the last commit and its report; a fresh worker takes the redelivery over. Judged as the one-table
crash suite is (test_crash_recovery.py): only once the fresh worker has acked a later delivery, then

- the destination equals the source, row by row (each row once);
- the ledger holds the run's own entry (the whole run's counts, its sub-window count) and one entry
  per sub-window, consecutive, all ending at the one overall high the killed delivery planned; the
  sub-windows committed before the kill are the killed delivery's, the rest the fresh one's;
- the fresh delivery read only the rows the killed one had not committed (its run.started);
- Django's view ends with one run.completed (one event id) with every row of the run.

250 rows (distinct cursor values), ETL_CHUNK_ROWS=100: sub-windows of 100, 100 and 50 rows, each
one batch (ETL_BATCH_SIZE=100) and one part (ETL_PART_ROWS=150).
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_rows, settings_env, settings_from_env
from tests.faults.harness import WorkerProcess, kill_then_redeliver, ledger
from worker.faults import PHASES, SUB_WINDOW_PHASES
from worker.sub_windows import sub_window_prefix

ROWS, CHUNK_ROWS, SUB_ROWS = 250, 100, [100, 100, 50]
# (phase, its N-th passage in the killed process, sub-windows the killed delivery had committed)
SCENARIOS = [
    ("sub_window_committed", 1, 1),  # at a sub-window boundary: the first committed, the second unread
    ("sub_window_committed", 2, 2),
    ("part_written", 2, 1),  # mid-sub-window: the second's part on disk, not loaded
    ("staging_loaded", 3, 2),  # mid-sub-window: the third's part loaded, not committed
    ("after_commit", 1, 3),  # between the last commit (with the run's entry) and its report
]
assert {phase for phase, _, _ in SCENARIOS} <= {*PHASES, *SUB_WINDOW_PHASES}


@pytest.fixture
def chunk_stack(pubsub_emulator: Any, bq_emulator: Any, bq_dataset: str) -> Stack:
    env = settings_env(
        pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
        ETL_BATCH_SIZE=100, ETL_PART_ROWS=150, ETL_CHUNK_ROWS=CHUNK_ROWS, ETL_MAX_DELIVERY_ATTEMPTS=20,
    )
    return Stack(settings_from_env(env), env)


def sub_window_entries(client: bigquery.Client, dataset: str, run_id: str) -> list[dict[str, Any]]:
    query = (f"SELECT * FROM `{client.project}.{dataset}._etl_ledger` "
             f"WHERE STARTS_WITH(run_id, '{sub_window_prefix(run_id)}') ORDER BY sub_window")
    return [dict(row.items()) for row in client.query(query).result()]


@pytest.mark.parametrize("orders_source", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize(("phase", "occurrence", "killed_committed"),
                         [pytest.param(*s, id=f"{s[0]}-{s[1]}") for s in SCENARIOS])
def test_a_backfill_killed_between_or_inside_sub_windows_resumes_and_loads_each_row_once(
    phase: str, occurrence: int, killed_committed: int, chunk_stack: Stack, orders_source: SeededSource,
    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
) -> None:
    dataset = chunk_stack.settings.bigquery_dataset
    number = uuid.uuid4().int % 10**12
    run_id = f"etl-run-{number}"
    body = orders_source.request("transactional", etl_run_id=number)
    # When the worker dies at the phase's passage, and a fresh one takes the redelivery over
    faults = {"ETL_CRASH_AT": phase, "ETL_CRASH_OCCURRENCE": str(occurrence)}
    takeover = kill_then_redeliver(chunk_stack, body, run_id, faults, workers, tmp_path)
    context = takeover.context
    assert takeover.died_at.startswith(phase), context
    completed = takeover.events.wait_completed_after(run_id, takeover.killed_at)
    # Then the destination equals the source, each row once
    copied = [normalise(r) for r in bq_rows(bq_client, dataset, "orders", "id")]
    assert copied == orders_source.rows(), context
    # And the ledger has the run's own entry and its three consecutive sub-windows, one overall high
    (own,) = ledger(bq_client, dataset, run_id)
    assert (own["rows_loaded"], own["source_row_count"], own["sub_windows"]) == (ROWS, ROWS, 3), own
    parts = sub_window_entries(bq_client, dataset, run_id)
    assert [p["sub_window"] for p in parts] == [1, 2, 3] and [p["rows_loaded"] for p in parts] == SUB_ROWS
    assert all(a["window_high"] == b["window_low"] for a, b in itertools.pairwise(parts)), parts
    assert {p["run_window_high"] for p in parts} == {own["window_high"]} == {parts[-1]["window_high"]}
    assert own["window_low"] == parts[0]["window_low"]
    # And the sub-windows committed before the kill are the killed delivery's, the rest the fresh one's
    killed, fresh = takeover.killed_attempt, takeover.fresh.attempt
    assert [p["attempt"] for p in parts] == [killed] * killed_committed + [fresh] * (3 - killed_committed)
    # And the fresh delivery read only what was not committed yet (nothing, when all was)
    started = [p.event for p in takeover.events.all(run_id) if p.event["event_type"] == "run.started"
               and p.event["attempt"] == fresh]
    rest = ROWS - sum(SUB_ROWS[:killed_committed])
    assert [s["rows_expected"] for s in started] == ([rest] if rest else []), (context, started)
    # And Django sees one run.completed with the whole run
    assert {p.event["event_type"] for p in completed} == {"run.completed"}, (context, completed)
    assert len({p.event["event_id"] for p in completed}) == 1, (context, completed)
    last = completed[-1].event
    assert (last["rows_loaded"], last["sub_windows"], last["attempt"]) == (ROWS, 3, own["attempt"]), last
    assert last["watermark"] == own["window_high"]
