"""A ledger entry: the durable record, written in the commit transaction, that a run was applied.

It holds everything needed to publish the same `run.completed` again after a crash or a replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    data_source_id: int
    etl_run_id: int | None
    dest_table: str
    load_type: str
    window_column: str | None
    window_low: str | None
    window_high: str | None
    rows_extracted: int
    rows_loaded: int
    batches_loaded: int
    source_row_count: int | None
    attempt: int  # the delivery attempt that committed
    completed_seq: int  # seq of that attempt's run.completed event
    staging_token: str  # unique per delivery: tells "I applied it" from "found it applied"
    started_at: datetime
    committed_at: datetime
    duration_seconds: float
    window_low_key: str | None = None  # sortable forms of the bounds (window.cursor_key), for the
    window_high_key: str | None = None  # overlap guard in the commit transaction
    snapshot_at: datetime | None = None  # source clock when the snapshot opened: orders catalog commits
    # Reported again, unchanged, in every run.completed of the run: per column, values BigQuery
    # cannot hold that were loaded as NULL; warnings such as a column the source no longer has.
    values_nulled: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
