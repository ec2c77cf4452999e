"""The run history's pure parts: rows, states, per-table health; and that recording never changes a
run's outcome (a history that cannot be written is a logged gap)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.commands.runs import summarise
from worker.errors import SourceConnectionError
from worker.events import Counters, MemoryEventBus, RunEvents
from worker.history import RecordingBus, RunRecord, history_row, outcome_of

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class BrokenTable:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def insert(self, rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("BigQuery is down")


class MemoryTable:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def insert(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)


def events_on(bus: Any) -> RunEvents:
    return RunEvents(bus, run_id="etl-run-1", attempt=2, data_source_id=3, etl_run_id=1, dest_table="t",
                     load_type="catalog", progress_interval_s=0)


def test_every_event_but_progress_is_recorded_after_it_is_published() -> None:
    inner, table = MemoryEventBus(), MemoryTable()
    bus = RecordingBus(inner, table)  # type: ignore[arg-type]  # a stand-in: RecordingBus only inserts
    run = events_on(bus)
    run.started("postgresql", "public.t")
    run.progress(Counters(rows_extracted=5))
    run.failed(SourceConnectionError("refused"), will_retry=True)
    assert bus.flush()
    assert [e.event_type for e in inner.events] == ["run.started", "run.progress", "run.failed"]
    assert [r["event_type"] for r in table.rows] == ["run.started", "run.failed"]
    failed = table.rows[1]
    assert (failed["error_type"], failed["will_retry"]) == ("SourceConnectionError", True)
    assert failed["attempt"] == 2
    assert failed["event_id"] == inner.events[2].event_id


def test_a_history_that_cannot_be_written_is_a_logged_gap_never_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = MemoryEventBus()
    bus = RecordingBus(inner, BrokenTable())  # type: ignore[arg-type]  # a stand-in, as above
    with caplog.at_level(logging.ERROR, logger="worker.history"):
        events_on(bus).started("postgresql", "public.t")  # does not raise
        assert bus.flush()
    assert [e.event_type for e in inner.events] == ["run.started"]
    assert any("history gap: run.started" in r.getMessage() and "BigQuery is down" in r.getMessage()
               for r in caplog.records)


def test_a_row_carries_the_whole_event() -> None:
    inner = MemoryEventBus()
    events_on(inner).failed(SourceConnectionError("refused"), will_retry=False)
    row = history_row(inner.events[0])
    assert row["will_retry"] is False and '"event_type":"run.failed"' in row["event"]


@pytest.mark.parametrize(("event_type", "will_retry", "outcome"), [
    ("run.completed", None, "committed"), ("run.failed", True, "retrying"), ("run.failed", False, "failed"),
    ("run.dead_lettered", None, "dead-lettered"), ("run.replayed", None, "replayed"),
    ("run.started", None, "running"),
])
def test_the_state_a_run_is_left_in(event_type: str, will_retry: bool | None, outcome: str) -> None:
    assert outcome_of(event_type, will_retry) == outcome


def record(run: str, table: str, outcome: str, hours: float, rows: int = 0, duration: float = 0) -> RunRecord:
    return RunRecord(run_id=run, data_source_id=1, dest_table=table, load_type="catalog", outcome=outcome,
                     attempt=1, last_at=T0 - timedelta(hours=hours), rows_loaded=rows,
                     duration_seconds=duration, error=None, window=None)


def test_per_table_health_over_a_period() -> None:
    records = [record("r1", "orders", "committed", 30, 1000, 4.0), record("r2", "orders", "failed", 20),
               record("r3", "orders", "committed", 10, 2000, 6.0), record("r4", "orders", "retrying", 1),
               record("r5", "items", "dead-lettered", 5)]
    health = {h.dest_table: h for h in summarise(records, T0 - timedelta(days=2), T0)}
    orders = health["orders"]
    assert (orders.runs, orders.success_rate, orders.median_duration_s) == (4, 2 / 3, 5.0)
    assert orders.last_success == T0 - timedelta(hours=10) and orders.now == "retrying"
    assert orders.rows_per_day == pytest.approx(1500.0)  # 3000 rows in 2 days
    items = health["items"]
    assert (items.success_rate, items.last_success, items.now) == (0.0, None, "dead-lettered")
