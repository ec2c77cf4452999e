"""A week of run history written to `_etl_runs` by the worker's own HistoryTable: events built by
RunEvents, their times moved into the past (the dashboard's charts need days to draw)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.ops.runs import RunScript
from worker.errors import SourceConnectionError, SourceSchemaError
from worker.events import MemoryEventBus
from worker.history import HistoryTable, history_row
from worker.messages import Event

TABLES = (("orders", 7, 120_000, 40.0), ("customers", 7, 18_000, 9.0), ("invoices", 8, 52_000, 22.0))


def write_week(client: bigquery.Client, dataset: str, now: datetime | None = None) -> int:
    """Four runs a day per table for 7 days; invoices slows down, customers fails twice and
    dead-letters once. Returns the number of committed runs."""
    now = now or datetime.now(UTC)
    rows, committed = [], 0
    for day in range(7, -1, -1):
        for slot in range(4):
            at = now - timedelta(days=day, hours=18 - slot * 5, minutes=7)
            if at > now:
                continue
            for n, (table, source, size, seconds) in enumerate(TABLES):
                events, done = _run(table, source, size, seconds, day, slot, n)
                committed += done
                rows += [history_row(_at(e, at + timedelta(seconds=i))) for i, e in enumerate(events)]
    HistoryTable(client, PROJECT, dataset).insert(rows)
    return committed


def _run(table: str, source: int, size: int, seconds: float, day: int, slot: int,
         n: int) -> tuple[list[Event], int]:
    bus = MemoryEventBus()
    run_id = f"etl-run-{9000 + day * 40 + slot * 4 + n}"
    run = RunScript(bus, table=table, data_source_id=source, run_id=run_id)
    run.started(rows_expected=size)
    if table == "customers" and (day, slot) in ((3, 1), (3, 2)):
        run.failed(SourceSchemaError("column 'email' not found in source table crm.customers"))
        return bus.events, 0
    if table == "customers" and (day, slot) == (5, 0):
        run.dead_lettered(SourceConnectionError("connection refused (10.0.0.5:5432)"))
        return bus.events, 0
    slower = 1 + (7 - day) * 0.35 if table == "invoices" else 1 + 0.08 * ((day + slot) % 3)
    run.completed(rows=size + 900 * slot + 300 * (7 - day), seconds=round(seconds * slower, 1))
    return bus.events, 1


def _at(event: Event, moment: datetime) -> Event:
    update = {"occurred_at": moment}
    if event.event_type == "run.completed":
        update["committed_at"] = moment
    return event.model_copy(update=update)
