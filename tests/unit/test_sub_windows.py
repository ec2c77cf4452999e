"""Windows of more than ETL_CHUNK_ROWS rows, committed in sub-windows (worker/sub_windows.py):
the boundary rule, the resume plan and the run's summary as pure functions; then the runner on the
in-memory source and sink: split, killed part-way, resumed up to the same fixed high."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.stubs import T0, Rig, order, request
from worker.errors import SourceConnectionError, SupersededError
from worker.ledger import LedgerEntry
from worker.sources.memory import Failure
from worker.sub_windows import (
    merged_quality,
    resumable,
    resume_of,
    sub_window_prefix,
    sub_window_run_id,
    summary,
)
from worker.window import CursorValue, Window, boundary

Bounds = tuple[int | None, int]


def split(values: list[int], rows: int, low: int | None = None, high: int = 10**9) -> list[Bounds]:
    """Every sub-window of [low, high) over sorted cursor values, the way the runner walks them."""
    windows: list[tuple[int | None, int]] = []
    while True:
        inside = sorted(v for v in values if (low is None or v >= low) and v < high)

        def above(value: CursorValue, inside: list[int] = inside) -> CursorValue | None:
            return next((v for v in inside if v > value), None)  # type: ignore[operator]

        bound = boundary(inside[rows] if len(inside) > rows else None, inside[0] if inside else None, above)
        windows.append((low, high if bound is None else int(bound)))  # type: ignore[arg-type]
        if bound is None:
            return windows
        low = int(bound)  # type: ignore[arg-type]


def rows_in(values: list[int], window: tuple[int | None, int]) -> list[int]:
    low, high = window
    return [v for v in values if (low is None or v >= low) and v < high]


@pytest.mark.parametrize(("values", "rows"), [
    (list(range(10)), 3),  # distinct values
    ([1, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 6, 6], 3),  # ties, none larger than a sub-window
    ([5] * 8 + [6, 7, 8], 3),  # one value holding more rows than a sub-window
    ([1, 2, 3] + [9] * 7, 2),  # ... at the end
    (list(range(3)), 3),  # exactly one sub-window's worth
    ([], 3),  # an empty window
])
def test_sub_windows_partition_the_window_and_never_split_a_cursor_value(values: list[int], rows: int
                                                                         ) -> None:
    windows = split(values, rows)
    # Consecutive, touching, covering the window
    assert windows[0][0] is None and windows[-1][1] == 10**9
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    # Every row in exactly one sub-window, and every value's rows together
    assert sorted(v for w in windows for v in rows_in(values, w)) == sorted(values)
    for value in set(values):
        assert sum(1 for w in windows if value in rows_in(values, w)) == 1
    # No sub-window above the chunk size unless it is one cursor value's rows; none empty but a lone one
    for w in windows:
        inside = rows_in(values, w)
        assert len(inside) <= rows or len(set(inside)) == 1
        assert inside or len(windows) == 1


def test_a_boundary_is_the_cursor_at_the_chunk_position_unless_the_rows_before_it_share_it() -> None:
    assert boundary(None, 1, lambda v: None) is None  # small enough: the last sub-window
    assert boundary(7, 1, lambda v: None) == 7
    assert boundary(5, 5, lambda v: 6) == 6  # value 5 fills more than a sub-window: it stays whole
    assert boundary(5, 5, lambda v: None) is None  # ... up to the window's end


def entry(low: int | None, high: int, rows: int, **changes: object) -> LedgerEntry:
    window = Window("id", low, high)
    base = LedgerEntry(
        run_id=sub_window_run_id("run-1", window.low_key, window.high_key), data_source_id=7, etl_run_id=None,
        dest_table="bq_orders", load_type="transactional", window_column="id", window_low=window.low_text,
        window_high=window.high_text, rows_extracted=rows, rows_loaded=rows, batches_loaded=1,
        source_row_count=rows, attempt=1, completed_seq=0, staging_token=f"t{high}", started_at=T0,
        committed_at=T0, duration_seconds=1.0, window_low_key=window.low_key, window_high_key=window.high_key,
        sub_window_of="run-1", run_window_high="100", values_nulled={"a": 1},
        quality={"rows": rows, "null_counts": {"a": 1}, "cursor_min": str(low), "cursor_max": str(high - 1)},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_resume_goes_on_from_the_last_committed_high_up_to_the_first_deliverys_high() -> None:
    done = [entry(20, 40, 5, sub_window=2, attempt=2), entry(None, 20, 4, sub_window=1)]
    resume = resume_of(done)
    assert [e.sub_window for e in resume.done] == [1, 2]
    assert (resume.low, resume.high, resume.rows_committed, resume.next_index) == ("40", "100", 9, 3)
    assert resume_of([]).high is None and resume_of([]).next_index == 1
    assert all(e.run_id.startswith(sub_window_prefix("run-1")) for e in done)


def test_the_runs_own_entry_sums_every_sub_window() -> None:
    parts = [entry(None, 20, 4), entry(20, 40, 5, values_nulled={"a": 2, "b": 1}), entry(40, 100, 1)]
    total = summary("run-1", parts, completed_seq=9, attempt=3)
    assert (total.run_id, total.window_low, total.window_high, total.sub_windows) == ("run-1", None, "100", 3)
    assert (total.rows_extracted, total.rows_loaded, total.source_row_count) == (10, 10, 10)
    assert (total.attempt, total.completed_seq, total.staging_token) == (3, 9, "t100")
    assert total.values_nulled == {"a": 4, "b": 1}
    assert total.sub_window_of is None and total.run_window_high is None
    assert total.quality == merged_quality([p.quality for p in parts])
    assert total.quality and total.quality["rows"] == 10 and total.quality["cursor_max"] == "99"
    assert total.quality["cursor_min"] == "None"  # the first sub-window's own text, as reported


def test_only_one_table_windowed_runs_without_rules_or_reconcile_are_resumable() -> None:
    assert resumable(request("transactional").table_specs(), 5)
    assert not resumable(request("transactional").table_specs(), 0)
    assert not resumable(request("catalog").table_specs(), 5)
    ruled = request("transactional", quality_rules=[{"rule": "min_rows", "value": 1}])
    assert not resumable(ruled.table_specs(), 5)


# --- the runner on the memory source and sink -----------------------------------------------------
@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def sub_entries(rig: Rig, run_id: str) -> list[LedgerEntry]:
    return [e for e in rig.sink.ledger if e.run_id.startswith(sub_window_prefix(run_id))]


def test_a_window_above_the_chunk_size_is_committed_in_sub_windows_and_reported_whole(rig: Rig) -> None:
    result = rig.runner(chunk_rows=3).run(request("transactional"), "run-1", rig.events("run-1"))
    assert result.applied_now
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 11))
    parts = sub_entries(rig, "run-1")
    assert [e.rows_loaded for e in parts] == [3, 3, 3, 1] and [e.sub_window for e in parts] == [1, 2, 3, 4]
    assert [e.run_id for e in rig.sink.ledger if e.sub_window_of is None] == ["run-1"]
    completed = rig.of("run-1")[-1]
    assert completed.event_type == "run.completed" and completed.sub_windows == 4
    assert (completed.rows_loaded, completed.source_row_count, completed.window_low) == (10, 10, None)
    assert completed.watermark == parts[-1].window_high
    progress = [e for e in rig.of("run-1") if e.event_type == "run.progress" and e.phase == "committing"]
    assert [(p.sub_window, p.rows_committed, p.rows_extracted) for p in progress] == [
        (1, 0, 3), (2, 3, 6), (3, 6, 9), (4, 9, 10)]
    assert all(staging.dropped for staging in rig.sink.stagings)
    # And a redelivery after it all reports the same run.completed, loading nothing
    again = rig.runner(chunk_rows=3).run(request("transactional"), "run-1", rig.events("run-1", 2))
    assert not again.applied_now and rig.of("run-1")[-1] == completed


def test_a_window_at_or_below_the_chunk_size_keeps_its_one_commit(rig: Rig) -> None:
    rig.runner(chunk_rows=10).run(request("transactional"), "run-1", rig.events("run-1"))
    assert [e.run_id for e in rig.sink.ledger] == ["run-1"] and rig.sink.ledger[0].sub_windows is None
    assert rig.of("run-1")[-1].sub_windows is None


@pytest.mark.parametrize("load_type", ["transactional", "merge"])
def test_a_run_that_fails_part_way_keeps_its_sub_windows_and_the_redelivery_finishes_the_same_window(
    rig: Rig, load_type: str
) -> None:
    keyed = {"primary_key": ["id"]} if load_type == "merge" else {}
    req = request(load_type, timestamp_column="updated_at", **keyed)
    # Given a delivery whose source connection drops in its third sub-window
    rig.source.failures = [Failure(SourceConnectionError("server closed"), after_batches=3)]
    with pytest.raises(SourceConnectionError):
        rig.runner(chunk_rows=3, max_tries=1).run(req, "run-1", rig.events("run-1"))
    first = sub_entries(rig, "run-1")
    assert [e.rows_loaded for e in first] == [3, 3] and not rig.sink.find_job("run-1")
    high = first[0].run_window_high
    # And rows arriving meanwhile, inside the clock's later reach
    rig.clock.now += timedelta(days=1)
    rig.orders.rows.append(order(11, minutes=60 * 30))
    # When the request is delivered again
    result = rig.runner(chunk_rows=3).run(req, "run-1", rig.events("run-1", attempt=2))
    # Then it went on from the last committed sub-window up to the first delivery's high
    assert result.applied_now
    parts = sub_entries(rig, "run-1")
    assert [e.sub_window for e in parts] == [1, 2, 3, 4] and {e.run_window_high for e in parts} == {high}
    assert [e.attempt for e in parts] == [1, 1, 2, 2]
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 11))  # each once
    completed = rig.of("run-1")[-1]
    assert (completed.rows_loaded, completed.sub_windows, completed.window_high) == (10, 4, high)
    assert completed.attempt == 2 and completed.window_low is None
    started = [e for e in rig.of("run-1") if e.event_type == "run.started"]
    assert started[-1].rows_expected == 4 and started[-1].window_low == first[-1].window_high
    # And the next run reads the new row from that high on
    rig.runner(chunk_rows=3).run(req, "run-2", rig.events("run-2"))
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 12))


def test_a_run_overtaken_after_its_sub_windows_fails_as_superseded_and_keeps_them(rig: Rig) -> None:
    rig.source.failures = [Failure(SourceConnectionError("server closed"), after_batches=2)]
    with pytest.raises(SourceConnectionError):
        rig.runner(chunk_rows=3, max_tries=1).run(request("transactional"), "run-1", rig.events("run-1"))
    assert len(sub_entries(rig, "run-1")) == 1
    rig.runner(chunk_rows=100).run(request("transactional"), "run-2", rig.events("run-2"))  # the rest
    with pytest.raises(SupersededError):
        rig.runner(chunk_rows=3).run(request("transactional"), "run-1", rig.events("run-1", 2))
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 11))


def test_rows_sharing_a_cursor_value_stay_in_one_sub_window(rig: Rig) -> None:
    rig.orders.rows[:] = [order(i, minutes=1 if i <= 5 else i) for i in range(1, 11)]
    rig.runner(chunk_rows=2).run(request("transactional"), "run-1", rig.events("run-1"))
    assert [e.rows_loaded for e in sub_entries(rig, "run-1")] == [5, 2, 2, 1]
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 11))
