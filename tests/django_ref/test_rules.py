"""The consumer's rules on in-memory runs (no services): the corner cases a live run rarely shows."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from etl.models import Job, Run, RunState
from etl.state import advance_watermark, apply_event

RUN = "etl-run-9"


def event(kind: str, attempt: int, seq: int, **fields: Any) -> dict[str, Any]:
    return {"event_type": kind, "event_id": f"{kind}/{attempt}/{seq}", "run_id": RUN, "attempt": attempt,
            "seq": seq, "occurred_at": "2026-01-01T00:00:00.000001Z", "rows_extracted": seq,
            "rows_loaded": seq, "batches_loaded": 1, "duration_seconds": 0.5, "dest_table": "orders",
            "data_source_id": 1, "etl_run_id": 9, "context": None, **fields}


def failed(attempt: int, seq: int, will_retry: bool) -> dict[str, Any]:
    error = {"type": "SourceConnectionError", "message": "refused", "retryable": True}
    return event("run.failed", attempt, seq, error=error, will_retry=will_retry)


def completed(attempt: int, seq: int, high: str = "2024-05-01T00:00:00.000000+00:00",
              key: str | None = None) -> dict[str, Any]:
    return event("run.completed", attempt, seq, window_low="2024-01-01", window_high=high, watermark=high,
                 watermark_key=key or high, source_row_count=seq, committed_at="2026-01-01T00:00:01Z",
                 values_nulled={}, warnings=[])


def dead_lettered(attempt: int, seq: int) -> dict[str, Any]:
    error = {"type": "SourceConnectionError", "message": "refused", "retryable": True}
    return event("run.dead_lettered", attempt, seq, error=error, dead_letter_topic="dl")


def replayed(attempt: int, count: int = 1) -> dict[str, Any]:
    return event("run.replayed", attempt, 1, replay_of="m1", replay_count=count, rows_extracted=0,
                 rows_loaded=0)


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    run = Run(run_id=RUN)
    for item in events:
        apply_event(run, item)
    return run.outcome()


def test_completed_wins_even_over_a_newer_attempts_events() -> None:
    # A duplicate delivery (attempt 3) failed after attempt 2 had committed
    run = Run(run_id=RUN)
    for item in (event("run.started", 2, 1), failed(3, 1, will_retry=True), completed(2, 4)):
        apply_event(run, item)
    assert (run.state, run.error_type, run.will_retry) == (RunState.COMPLETED, "", None)
    # and nothing after it moves it back
    for late in (event("run.progress", 2, 3, phase="extracting", fraction=0.5), event("run.started", 4, 1),
                 failed(4, 2, will_retry=False)):
        assert apply_event(run, late) is False
    assert run.state == RunState.COMPLETED and run.fraction == 1.0


def test_every_order_of_a_retried_run_ends_completed_the_same() -> None:
    stream = [failed(1, 1, True), event("run.started", 2, 1, rows_expected=4),
              event("run.progress", 2, 2, phase="extracting", fraction=0.5, rows_expected=4),
              event("run.progress", 2, 3, phase="committing", fraction=1.0, rows_expected=4), completed(2, 4)]
    outcomes = {repr(final(list(order))) for order in itertools.permutations(stream)}
    assert len(outcomes) == 1
    assert final(stream)["state"] == RunState.COMPLETED


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_last_failure_then_dead_letter_in_any_order_is_dead_lettered(order: tuple[int, int]) -> None:
    stream = [failed(5, 1, will_retry=False), dead_lettered(5, 2)]
    outcome = final([stream[i] for i in order])
    assert (outcome["state"], outcome["attempt"], outcome["seq"]) == (RunState.DEAD_LETTERED, 5, 2)


def test_replayed_comes_after_its_attempts_events_and_before_the_next_attempts() -> None:
    # run.replayed carries (attempt 5, seq 1): by (attempt, seq) alone it would sort before the
    # dead letter (5, 2) and never show.
    assert final([failed(5, 1, False), dead_lettered(5, 2), replayed(5)])["state"] == RunState.REPLAYED
    assert final([dead_lettered(5, 2), replayed(5), event("run.started", 6, 1)])["state"] == RunState.RUNNING
    late = final([dead_lettered(5, 2), event("run.started", 6, 1), replayed(5)])
    assert (late["state"], late["replay_count"]) == (RunState.RUNNING, 1)


def test_unknown_event_types_are_ignored() -> None:
    run = Run(run_id=RUN)
    assert apply_event(run, event("run.paused", 1, 1)) is False
    assert run.state == RunState.QUEUED


def test_watermark_moves_only_forward_by_key_and_only_from_completed() -> None:
    job = Job(dest_table="orders")
    # Integer cursors: "9" sorts after "10" as text, their keys sort right
    nine = completed(1, 2, high="9", key=f"{9 + 2**63:020d}")
    ten = completed(1, 2, high="10", key=f"{10 + 2**63:020d}")
    assert advance_watermark(job, ten) and job.last_sync_value == "10"
    assert not advance_watermark(job, nine) and job.last_sync_value == "10"
    assert not advance_watermark(job, event("run.progress", 1, 1, watermark="99", watermark_key="z"))
    other_table = {**completed(1, 2, high="11", key=f"{11 + 2**63:020d}"), "dest_table": "elsewhere"}
    assert not advance_watermark(job, other_table) and job.last_sync_value == "10"
    catalog = {**completed(1, 2), "watermark": None, "watermark_key": None}
    assert not advance_watermark(job, catalog)
