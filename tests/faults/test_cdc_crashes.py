"""CDC and SIGKILL: a worker killed at every phase of a cdc run, a later run's (changes) and a
first run's (the exported snapshot), including after the BigQuery commit and before the slot is
advanced (`cdc_committed`); a fresh worker takes the redelivery over. Judged as the other crash
suites do (tests/faults/harness.py), and more: the run applied exactly the changes made (counts
per operation), and the next run starts where it ended and applies exactly the changes after it,
so no change was lost or applied twice."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from tests.cdc.conftest import CdcSource, cdc_source
from tests.cdc.test_cdc_postgres import dest, source_rows
from tests.e2e.stack import Stack
from tests.faults.harness import (
    COMMITTED_BY_THE_KILLED,
    CommitHold,
    WorkerProcess,
    kill_then_redeliver,
    ledger,
    release_once_redelivered,
)
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.faults import CDC_PHASES, PHASES
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.messages import RunCompleted

__all__ = ["cdc_source"]
ROWS = 250
CHANGES = {"inserts": 50, "updates": 120, "deletes": 30, "truncates": 0}
SNAPSHOT_PHASES = ("cdc_planned", "extraction_started", "before_commit", "after_commit", "cdc_committed")
KILLED_COMMITTED = COMMITTED_BY_THE_KILLED | {"cdc_committed"}


def run_here(stack: Stack, body: dict[str, Any], run_id: str) -> dict[str, Any]:
    """One run in this process (no fault injection): its run.completed's cdc report."""
    bus = MemoryEventBus()
    handler = build_handler(stack.settings, bus, Redelivery(redelivers=False))
    delivery = Delivery(data=json.dumps(body).encode(), message_id=run_id, attributes={"run_id": run_id})
    assert handler.handle(delivery, threading.Event()) is Outcome.ACK
    last = bus.events[-1]
    assert isinstance(last, RunCompleted) and last.cdc is not None, last
    return last.cdc


def seed(source: CdcSource) -> None:
    source.execute("INSERT INTO {schema}.items SELECT g, 'n' || g, g, g, jsonb_build_object('g', g), "
                   f"NULL, NULL, now() FROM generate_series(1, {ROWS}) g")


def change(source: CdcSource, first_new: int) -> None:
    """CHANGES: 50 inserts, 120 updates (some rows twice), 30 deletes, in three transactions."""
    source.execute(f"INSERT INTO {{schema}}.items (id, name) SELECT g, 'new' FROM "
                   f"generate_series({first_new}, {first_new + 49}) g")
    source.execute("UPDATE {schema}.items SET qty = qty + 1 WHERE id BETWEEN 1 AND 80",
                   "UPDATE {schema}.items SET name = 'twice' WHERE id BETWEEN 41 AND 80")
    source.execute("DELETE FROM {schema}.items WHERE id IN (SELECT id FROM {schema}.items "
                   "WHERE id BETWEEN 101 AND 250 ORDER BY id LIMIT 30)")


def kill_and_check(phase: str, snapshot: bool, stack: Stack, source: CdcSource,
                   workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
                   request: pytest.FixtureRequest) -> None:
    seed(source)
    if not snapshot:  # a first run in this process; the killed one reads the changes after it
        run_here(stack, source.request(), f"first-{uuid.uuid4().hex[:8]}")
        change(source, 1_000)
    number = uuid.uuid4().int % 10**12
    run_id = f"etl-run-{number}"
    faults, redelivered = {"ETL_CRASH_AT": phase}, None
    if phase == "commit_submitted":  # the commit job goes on running until the redelivery arrived
        hold: CommitHold = request.getfixturevalue("commit_hold")
        faults["ETL_COMMIT_HOLD_DIR"] = str(hold.directory)
        redelivered = release_once_redelivered(hold, fail=False)
    # Given a worker killed at the phase, and a fresh one that takes the redelivery over
    takeover = kill_then_redeliver(stack, source.request(etl_run_id=number), run_id, faults, workers,
                                   tmp_path, redelivered)
    completed = takeover.events.wait_completed_after(run_id, takeover.killed_at)
    context = takeover.context
    assert takeover.died_at.startswith(phase), context
    # Then the destination equals the source and the run is in the ledger once, by the delivery expected
    dataset = stack.settings.bigquery_dataset
    assert dest(bq_client, dataset) == source_rows(source), context
    entries = ledger(bq_client, dataset, run_id)
    assert len(entries) == 1, (context, entries)
    committer = takeover.killed_attempt if phase in KILLED_COMMITTED else takeover.fresh.attempt
    assert entries[0]["attempt"] == committer, (context, entries)
    # And it applied exactly the changes made (a first run: the snapshot)
    events = {p.event["event_id"]: p.event for p in completed}
    assert [e["event_type"] for e in events.values()] == ["run.completed"], (context, completed)
    report = next(iter(events.values()))["cdc"]
    expected = {"inserts": ROWS, "updates": 0, "deletes": 0, "truncates": 0} if snapshot else CHANGES
    assert {op: report[op] for op in expected} == expected, (context, report)
    # And the next run starts where it ended, and applies exactly the changes after it
    change(source, 2_000)
    after = run_here(stack, source.request(), f"after-{uuid.uuid4().hex[:8]}")
    assert after["start"] == report["end"] and {op: after[op] for op in CHANGES} == CHANGES, (report, after)
    assert dest(bq_client, dataset) == source_rows(source), context


@pytest.mark.parametrize("phase", (*PHASES, *CDC_PHASES))
def test_a_cdc_run_killed_at_any_phase_applies_every_change_once(
    phase: str, crash_stack: Stack, cdc_source: CdcSource, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    kill_and_check(phase, False, crash_stack, cdc_source, workers, bq_client, tmp_path, request)


@pytest.mark.parametrize("phase", SNAPSHOT_PHASES)
def test_a_first_cdc_run_killed_at_any_phase_loads_the_snapshot_once_and_misses_no_change(
    phase: str, crash_stack: Stack, cdc_source: CdcSource, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    kill_and_check(phase, True, crash_stack, cdc_source, workers, bq_client, tmp_path, request)
