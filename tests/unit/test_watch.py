"""`watch`'s board: a pure function of the events seen (folded, then drawn at a given time)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from worker.commands.watch import fold, format_elapsed, render
from worker.errors import SourceConnectionError, SourceSchemaError
from worker.events import Counters, MemoryEventBus, RunEvents
from worker.ledger import LedgerEntry

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Script:
    """Events of one run as the worker publishes them, with occurred_at on a fake timeline."""

    def __init__(self, run_id: str, dest: str, attempt: int = 1, load_type: str = "catalog") -> None:
        self.bus, self.clock = MemoryEventBus(), Clock()
        self.run = RunEvents(self.bus, run_id=run_id, attempt=attempt, data_source_id=7, etl_run_id=None,
                             dest_table=dest, load_type=load_type, progress_interval_s=0, clock=self.clock)
        self.dest, self.run_id, self.attempt = dest, run_id, attempt

    def at(self, seconds: float) -> Script:
        self.clock.now = seconds
        return self

    def dicts(self, start: float = 0.0) -> list[dict[str, Any]]:
        out = []
        for event in self.bus.events:
            data = json.loads(event.model_dump_json())
            data["occurred_at"] = (T0 + timedelta(seconds=start + data["duration_seconds"])).isoformat()
            out.append(data)
        return out

    def entry(self, rows: int, seconds: float) -> LedgerEntry:
        return LedgerEntry(
            run_id=self.run_id, data_source_id=7, etl_run_id=None, dest_table=self.dest,
            load_type="catalog", window_column=None, window_low=None, window_high=None,
            rows_extracted=rows, rows_loaded=rows, batches_loaded=3, source_row_count=rows,
            attempt=self.attempt, completed_seq=self.run.reserve_seq(), staging_token="t",
            started_at=T0, committed_at=T0 + timedelta(seconds=seconds), duration_seconds=seconds)


def running_orders() -> list[dict[str, Any]]:
    script = Script("etl-run-101", "orders")
    script.run.started("postgresql", "public.orders")
    script.at(4).run.progress(Counters(rows_extracted=40_000))
    script.at(10).run.progress(Counters(rows_extracted=100_000))
    return script.dicts()


def completed_customers() -> list[dict[str, Any]]:
    script = Script("etl-run-102", "customers")
    script.run.started("mysql", "shop.customers")
    script.at(2).run.progress(Counters(rows_extracted=2_500))
    script.at(3).run.progress(Counters(rows_extracted=2_500), phase="committing", force=True)
    script.at(4.5).run.completed(script.entry(2_500, 4.5))
    return script.dicts()


def failed_invoices() -> list[dict[str, Any]]:
    script = Script("etl-run-103", "invoices")
    script.run.started("postgresql", "public.invoices")
    script.at(0.4).run.failed(SourceSchemaError("column 'totl' not found in source table public.invoices"),
                              Counters())
    return script.dicts(start=1)


def retrying_payments() -> list[dict[str, Any]]:
    script = Script("msg-8812", "payments", attempt=2)
    script.at(0.2).run.failed(SourceConnectionError("connection refused (127.0.0.1:6543)"), Counters())
    return script.dicts(start=6)


def test_a_run_goes_from_starting_through_extracting_to_completed() -> None:
    events = completed_customers()
    phases = [fold(events[:n]).lines[0].phase for n in range(1, len(events) + 1)]
    assert phases == ["starting", "extracting", "committing", "completed"]
    line = fold(events).lines[0]
    assert (line.table, line.rows, line.ended) == ("shop.customers → customers", 2_500, True)
    assert line.elapsed_s(T0 + timedelta(hours=1)) == 4.5  # ended: its own duration, not the clock


def test_duplicates_and_stale_events_change_nothing() -> None:
    events = running_orders()
    once = fold(events).lines
    assert fold(events + events).lines == once
    assert fold([*events, events[1]]).lines == once  # an older progress arriving late


def test_a_completion_found_by_a_later_delivery_still_ends_the_run() -> None:
    events = completed_customers()
    retried_start = {**events[0], "event_id": "other", "attempt": 2, "seq": 1}
    board = fold([*events[:-1], retried_start, events[-1]])
    assert board.lines[0].phase == "completed"


def test_following_one_run_ignores_the_others_and_knows_when_it_ends() -> None:
    events = running_orders() + completed_customers()
    assert [line.run_id for line in fold(events, run_id="etl-run-102").lines] == ["etl-run-102"]
    assert fold(events, run_id="etl-run-102").done
    assert not fold(events, run_id="etl-run-101").done
    assert not fold(retrying_payments(), run_id="msg-8812").done  # Pub/Sub will deliver it again
    assert fold(failed_invoices(), run_id="etl-run-103").done


def test_foreign_or_broken_events_are_ignored() -> None:
    board = fold([{"hello": 1}, {"event_id": "x", "run_id": "r", "event_type": "run.exploded",
                                 "attempt": 1, "seq": 1, "occurred_at": T0.isoformat()}])
    assert board.lines == []


def test_rendering_shows_rate_elapsed_and_outcome() -> None:
    board = fold(running_orders() + completed_customers() + failed_invoices() + retrying_payments())
    text = screenshot(board, T0 + timedelta(seconds=12.5))
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith(("etl", "msg"))}
    assert "extracting" in rows["etl-run-101"] and "100,000" in rows["etl-run-101"]
    assert "8,000" in rows["etl-run-101"] and "12.5s" in rows["etl-run-101"]  # 100,000 rows in 12.5 s
    assert "✓ 2,500 rows committed" in rows["etl-run-102"] and "4.5s" in rows["etl-run-102"]
    assert "✗ SourceSchemaError: column 'totl' not found" in rows["etl-run-103"]
    assert "retrying" in rows["msg-8812"] and "↻ attempt 2 failed: SourceConnectionError" in rows["msg-8812"]
    assert "2 active run(s)" in text


def test_only_the_latest_ended_runs_are_kept() -> None:
    board = fold(completed_customers() + failed_invoices() + running_orders())
    text = screenshot(board, T0 + timedelta(seconds=5), max_ended=1)
    assert "etl-run-102" not in text and "etl-run-103" in text and "etl-run-101" in text


def test_elapsed_is_short() -> None:
    assert [format_elapsed(s) for s in (0.25, 59.9, 61, 3725)] == ["0.2s", "59.9s", "1:01", "1:02:05"]


def screenshot(board: Any, now: datetime, max_ended: int = 10) -> str:
    console = Console(record=True, width=150, force_terminal=False, color_system=None)
    console.print(render(board, now, max_ended=max_ended))
    return console.export_text()
