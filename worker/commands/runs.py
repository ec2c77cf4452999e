"""`etl-worker runs`: the most recent runs, newest first, from the BigQuery ledger.

The ledger holds one row per committed run (written in the run's commit transaction), so every run
listed is committed; failed deliveries are only in `run.failed` events (`etl-worker watch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.table import Table

from worker.ledger import LedgerEntry
from worker.modes import mode_of
from worker.settings import Settings

COLUMNS = ("committed at (UTC)", "run id", "source", "table", "mode", "status", "rows", "window",
           "duration")


def runs(settings: Settings, *, limit: int, data_source_id: int | None, console: Console) -> int:
    from worker.app import build_sink  # the BigQuery client is only needed here

    entries = build_sink(settings).recent_entries(limit, data_source_id)
    console.print(runs_table(entries))
    return 0


def runs_table(entries: Sequence[LedgerEntry]) -> Table:
    """One row per ledger entry, in the order given (newest first from `recent_entries`)."""
    table = Table(*COLUMNS, box=box.SIMPLE_HEAD, caption=_caption(entries), caption_justify="left")
    for entry in entries:
        table.add_row(*entry_cells(entry))
    return table


def entry_cells(entry: LedgerEntry) -> tuple[str, ...]:
    return (
        _when(entry.committed_at),
        entry.run_id,
        str(entry.data_source_id),
        entry.dest_table,
        entry.load_type,
        "committed",
        f"{entry.rows_loaded:,}",
        window_text(entry),
        f"{entry.duration_seconds:.1f}s",
    )


def window_text(entry: LedgerEntry) -> str:
    if not mode_of(entry.load_type).windowed:
        return "whole table"
    low = entry.window_low or "-∞"
    return f"{entry.window_column}: [{low}, {entry.window_high})"


def _when(moment: datetime) -> str:
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime("%Y-%m-%d %H:%M:%S")


def _caption(entries: Sequence[LedgerEntry]) -> str:
    if not entries:
        return "no committed runs in the ledger"
    return f"{len(entries)} run(s), newest first; the ledger records committed runs only"
