"""The dashboard's model without a browser: live runs folded from the worker's own events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.ops.runs import RunScript
from worker.commands.dashboard import model
from worker.commands.dashboard.model import LiveBoard
from worker.errors import SourceConnectionError
from worker.events import MemoryEventBus


def dicts(bus: MemoryEventBus) -> list[dict[str, object]]:
    return [json.loads(e.model_dump_json()) for e in bus.events]


def test_progress_fraction_dead_letters_and_duplicates() -> None:
    bus = MemoryEventBus()
    RunScript(bus, run_id="etl-run-1").started(rows_expected=1000).progress(250, at_s=2)
    RunScript(bus, run_id="etl-run-2").started().dead_lettered(SourceConnectionError("down"))
    board = LiveBoard()
    for event in dicts(bus) + dicts(bus):
        board.add(event)
    active, ended = board.rows(datetime.now(UTC) + timedelta(seconds=1))
    assert [(r["run_id"], r["fraction"], r["rows_expected"], r["rows"]) for r in active] == [
        ("etl-run-1", 0.25, 1000, 250)]
    assert [(r["run_id"], r["phase"], r["outcome"]) for r in ended] == [
        ("etl-run-2", "failed", "✗ dead-lettered")]


def test_a_run_silent_for_an_hour_is_no_longer_active() -> None:
    bus = MemoryEventBus()
    RunScript(bus).started()
    board = LiveBoard()
    board.add(dicts(bus)[0])
    assert board.rows(datetime.now(UTC) + timedelta(minutes=59))[0]
    assert board.rows(datetime.now(UTC) + timedelta(minutes=61))[0] == []


def test_only_so_many_ended_runs_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "MAX_LINES", 5)
    bus = MemoryEventBus()
    for i in range(8):
        RunScript(bus, run_id=f"etl-run-{100 + i}").started().completed()
    RunScript(bus, run_id="etl-run-live").started()
    board = LiveBoard()
    for event in dicts(bus):
        board.add(event)
    active, ended = board.rows(datetime.now(UTC))
    assert [r["run_id"] for r in active] == ["etl-run-live"]
    assert [r["run_id"] for r in ended] == ["etl-run-107", "etl-run-106", "etl-run-105", "etl-run-104"]
