"""Resumable windowed runs: a window of more than ETL_CHUNK_ROWS rows, as consecutive sub-windows.

A `transactional` or `merge` run whose window `[low, high)` holds more rows than the chunk size is
split on its cursor into sub-windows `[low, b1) [b1, b2) ... [bn, high)`, each staged and committed
in order as its own ledger entry. A failure keeps every committed sub-window; the redelivery (same
run id) finds them here, and goes on from the last one's high up to the SAME overall high, recorded
in every sub-window entry (`run_window_high`), never a new clock reading. The last sub-window's
commit also records the run's own entry (`summary`), with the whole run's counts: that entry is
what says "this run is done" and what every run.completed is rebuilt from.

Pure functions only: identities, the resume plan and the summary (the boundary rule is
`worker.window.boundary`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.ledger import LedgerEntry
from worker.messages import TableSpec
from worker.modes import mode_of

SUB_WINDOW_MARK = "/sub/"  # run id of a sub-window entry: <run id>/sub/<low key>..<high key>


def sub_window_prefix(run_id: str) -> str:
    """Every sub-window entry of `run_id` has a run id starting with this (how they are found)."""
    return f"{run_id}{SUB_WINDOW_MARK}"


def sub_window_run_id(run_id: str, low_key: str | None, high_key: str | None) -> str:
    """The ledger identity of one sub-window: derived from the run and the sub-window's bounds
    (their sortable keys), so two deliveries that stage the same sub-window commit it once (the
    second finds it applied)."""
    return f"{sub_window_prefix(run_id)}{low_key or ''}..{high_key or ''}"


def is_sub_window_of(entry: LedgerEntry, run_id: str) -> bool:
    return entry.run_id.startswith(sub_window_prefix(run_id))


@dataclass(frozen=True)
class Resume:
    """What earlier deliveries of a run committed, and where this one goes on."""

    done: tuple[LedgerEntry, ...]  # committed sub-windows, in window order

    @property
    def low(self) -> str | None:
        """Where the rest starts: the last committed sub-window's high."""
        return self.done[-1].window_high if self.done else None

    @property
    def low_key(self) -> str | None:
        return self.done[-1].window_high_key if self.done else None

    @property
    def high(self) -> str | None:
        """The run's fixed overall high, as the first delivery planned it."""
        return self.done[0].run_window_high if self.done else None

    @property
    def rows_committed(self) -> int:
        return sum(entry.rows_loaded for entry in self.done)

    @property
    def next_index(self) -> int:
        """The 1-based number of the next sub-window."""
        return len(self.done) + 1


def resume_of(entries: Sequence[LedgerEntry]) -> Resume:
    """The resume plan from a run's committed sub-window entries (any order)."""
    done = sorted(entries, key=lambda entry: (entry.window_high_key or "", entry.sub_window or 0))
    return Resume(tuple(done))


def sub_window_entry(entry: LedgerEntry, run_id: str, run_high: str, index: int) -> LedgerEntry:
    """A table run's entry for one sub-window, under the sub-window's identity."""
    return dataclasses.replace(
        entry, run_id=sub_window_run_id(run_id, entry.window_low_key, entry.window_high_key),
        completed_seq=0, sub_window_of=run_id, run_window_high=run_high, sub_window=index)


def summary(run_id: str, parts: Sequence[LedgerEntry], completed_seq: int, attempt: int) -> LedgerEntry:
    """The run's own entry, committed with its last sub-window: the window from the first
    sub-window's low to the last one's high, and every sub-window's counts summed."""
    first, last = parts[0], parts[-1]
    nulled: dict[str, int] = {}
    for part in parts:
        for column, count in part.values_nulled.items():
            nulled[column] = nulled.get(column, 0) + count
    warnings = tuple(dict.fromkeys(warning for part in parts for warning in part.warnings))
    counts = [part.source_row_count for part in parts]
    return dataclasses.replace(
        last, run_id=run_id, window_low=first.window_low, window_low_key=first.window_low_key,
        rows_extracted=sum(p.rows_extracted for p in parts), rows_loaded=sum(p.rows_loaded for p in parts),
        batches_loaded=sum(p.batches_loaded for p in parts),
        source_row_count=None if None in counts else sum(c for c in counts if c is not None),
        values_nulled=nulled, warnings=warnings, attempt=attempt, completed_seq=completed_seq,
        started_at=first.started_at, sub_window_of=None, run_window_high=None, sub_window=None,
        sub_windows=len(parts), quality=merged_quality([part.quality for part in parts]),
    )


def merged_quality(reports: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The measures of consecutive sub-windows as one run's (worker/quality.py's report): rows and
    NULLs summed, the cursor's range from the first to the last. A chunked run has no rules."""
    present = [report for report in reports if report]
    if not present:
        return None
    nulls: dict[str, int] = {}
    for report in present:
        for column, count in (report.get("null_counts") or {}).items():
            nulls[column] = nulls.get(column, 0) + int(count)
    with_min = [r for r in present if r.get("cursor_min") is not None]
    with_max = [r for r in present if r.get("cursor_max") is not None]
    return {
        "rows": sum(int(r.get("rows") or 0) for r in present), "null_counts": nulls,
        "null_counts_truncated": any(r.get("null_counts_truncated") for r in present),
        "cursor_min": with_min[0]["cursor_min"] if with_min else None,
        "cursor_max": with_max[-1]["cursor_max"] if with_max else None,
        "cursor_max_key": with_max[-1].get("cursor_max_key") if with_max else None,
        "violations": [],
    }


def resumable(specs: Sequence[TableSpec], chunk_rows: int) -> bool:
    """Whether a request's run may be committed in sub-windows: a one-table windowed run without
    quality rules (they judge the whole run) or reconcile_deletes (its keys pass is the whole
    table's). A job of several tables keeps its one commit (all tables or none)."""
    if chunk_rows < 1 or len(specs) != 1:
        return False
    spec = specs[0]
    return mode_of(spec.load_type).windowed and not spec.quality_rules and not spec.reconcile_deletes
