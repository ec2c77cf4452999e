"""CDC and SIGKILL, on PostgreSQL (logical decoding) and MariaDB (the binlog): a worker killed at
every phase of a cdc run, a later run's (changes) and a first run's (the exported or consistent
snapshot), including after the BigQuery commit and before the slot is advanced (`cdc_committed`;
MariaDB has no slot: the ledger alone holds the position); a fresh worker takes the redelivery
over. Judged as the other crash suites do (tests/faults/harness.py), and more: the run applied
exactly the changes made (counts per operation), and the next run starts where it ended and
applies exactly the changes after it, so no change was lost or applied twice."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from tests.cdc import test_cdc_mariadb as maria
from tests.cdc import test_cdc_postgres as pg
from tests.cdc.binlog_source import BinlogSource, binlog_source
from tests.cdc.conftest import CdcSource, cdc_source
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

__all__ = ["binlog_source", "cdc_source"]
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


class Source:
    """A cdc source table of either dialect, as the scenarios change and compare it."""

    def __init__(self, source: CdcSource | BinlogSource) -> None:
        self.source = source

    def request(self, **fields: Any) -> dict[str, Any]:
        return self.source.request(**fields)

    def seed(self) -> None:
        if isinstance(self.source, CdcSource):
            self.source.execute("INSERT INTO {schema}.items SELECT g, 'n' || g, g, g, "
                                "jsonb_build_object('g', g), NULL, NULL, now() "
                                f"FROM generate_series(1, {ROWS}) g")
        else:
            maria.seed(self.source, ROWS)

    def change(self, first_new: int) -> None:
        """CHANGES: 50 inserts, 120 updates (some rows twice), 30 deletes, in three transactions
        (every update changes its row: the binlog logs no row an UPDATE left as it was)."""
        if isinstance(self.source, CdcSource):
            new_rows = f"SELECT g, 'new' FROM generate_series({first_new}, {first_new + 49}) g"
            oldest = "id IN (SELECT id FROM {schema}.items WHERE id BETWEEN 101 AND 250 ORDER BY id LIMIT 30)"
        else:
            new_rows = f"SELECT seq, 'new' FROM seq_{first_new}_to_{first_new + 49}"
            oldest = "id BETWEEN 101 AND 250 ORDER BY id LIMIT 30"
        self.source.execute(f"INSERT INTO {{schema}}.items (id, name) {new_rows}")
        self.source.execute("UPDATE {schema}.items SET qty = qty + 1 WHERE id BETWEEN 1 AND 80",
                            f"UPDATE {{schema}}.items SET name = 'twice {first_new}' "
                            "WHERE id BETWEEN 41 AND 80")
        self.source.execute(f"DELETE FROM {{schema}}.items WHERE {oldest}")

    def dest(self, bq_client: bigquery.Client, dataset: str) -> list[tuple[Any, ...]]:
        if isinstance(self.source, CdcSource):
            return pg.dest(bq_client, dataset)
        return maria.dest(bq_client, dataset)

    def rows(self) -> list[tuple[Any, ...]]:
        source = self.source
        return pg.source_rows(source) if isinstance(source, CdcSource) else maria.source_rows(source)


@pytest.fixture(params=["postgresql", "mariadb"])
def source(request: pytest.FixtureRequest) -> Source:
    return Source(request.getfixturevalue("cdc_source" if request.param == "postgresql" else "binlog_source"))


def kill_and_check(phase: str, snapshot: bool, stack: Stack, source: Source,
                   workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
                   request: pytest.FixtureRequest) -> None:
    source.seed()
    if not snapshot:  # a first run in this process; the killed one reads the changes after it
        run_here(stack, source.request(), f"first-{uuid.uuid4().hex[:8]}")
        source.change(1_000)
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
    assert source.dest(bq_client, dataset) == source.rows(), context
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
    source.change(2_000)
    after = run_here(stack, source.request(), f"after-{uuid.uuid4().hex[:8]}")
    assert after["start"] == report["end"] and {op: after[op] for op in CHANGES} == CHANGES, (report, after)
    assert source.dest(bq_client, dataset) == source.rows(), context


@pytest.mark.parametrize("phase", (*PHASES, *CDC_PHASES))
def test_a_cdc_run_killed_at_any_phase_applies_every_change_once(
    phase: str, crash_stack: Stack, source: Source, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    kill_and_check(phase, False, crash_stack, source, workers, bq_client, tmp_path, request)


@pytest.mark.parametrize("phase", SNAPSHOT_PHASES)
def test_a_first_cdc_run_killed_at_any_phase_loads_the_snapshot_once_and_misses_no_change(
    phase: str, crash_stack: Stack, source: Source, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    kill_and_check(phase, True, crash_stack, source, workers, bq_client, tmp_path, request)
