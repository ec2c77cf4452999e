"""A ledger entry: the durable record, written in the commit transaction, that a run was applied.

It holds everything needed to publish the same `run.completed` again after a crash or a replay,
and what the run was for, so that a reused run id is told apart from a redelivery. A job writes one
entry per table, all in its one commit transaction, under the job's run id (`table_index` orders them).

The run record is declared HERE, once. Adding a field that `run.completed` reports:
1. add it to `LedgerEntry` (with a default, so older ledger rows still read: they hold NULL);
   the ledger column, its BigQuery type and its JSON codec follow from the annotation
   (`worker/sinks/bigquery_sql.py: LEDGER_FIELDS`), and older ledgers get the column on start-up;
2. add a field of the same name to `RunCompleted` (`worker/messages.py`), and to `TableCompleted`
   if it is about one table (a job lists its tables there): `RunEvents.completed` copies every
   field they share with the entry;
3. fill it in where a table run builds its entry (`worker/table_run.py: TableRun.entry`);
4. regenerate the contract: `make schemas` (a test fails when `schemas/` drifts), and describe the
   field in docs/events.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
    # What the run was for: a request with the same run id but another source table is another
    # run (a reused etl_run_id), never "already committed". NULL in rows of older versions.
    source_table: str | None = None
    # A reconciling merge: the source's keys read in the snapshot (= its COUNT(*)), all staged.
    keys_extracted: int | None = None
    # The request's opaque context, echoed in every run.completed (so also in repeats).
    context: Mapping[str, Any] | None = None
    # What the run measured on its rows and the quality rules it violated (worker/quality.py).
    quality: Mapping[str, Any] | None = None
    # The table's position in its job (0 for a one-table job; None in rows of older versions: 0).
    table_index: int | None = None
    # A cdc run: the change log range it applied (start, end: the position the next run starts
    # at), its inserts, updates, deletes and truncates, the newest change's commit time and lag.
    cdc: Mapping[str, Any] | None = None
    # A run read in sub-windows (worker/sub_windows.py). A sub-window's entry: the run it belongs
    # to, that run's fixed overall high (where a redelivery goes on to) and its 1-based number. The
    # run's own entry: how many sub-windows it was committed in (None: in one commit).
    sub_window_of: str | None = None
    run_window_high: str | None = None
    sub_window: int | None = None
    sub_windows: int | None = None

    def purpose(self) -> RunPurpose:
        return RunPurpose(self.data_source_id, self.source_table, self.dest_table, self.load_type)


@dataclass(frozen=True)
class RunPurpose:
    """What a run moves: a ledger entry counts as a request's own commit only when these match."""

    data_source_id: int
    source_table: str | None  # None: unknown (a ledger row written before it was recorded)
    dest_table: str
    load_type: str

    def matches(self, other: RunPurpose) -> bool:
        same = (self.data_source_id, self.dest_table, self.load_type) == (
            other.data_source_id, other.dest_table, other.load_type)
        unknown = self.source_table is None or other.source_table is None
        return same and (unknown or self.source_table == other.source_table)

    def describe(self) -> str:
        return f"data source {self.data_source_id}: {self.describe_table()}"

    def describe_table(self) -> str:
        source = self.source_table or "(source table not recorded)"
        return f"{source} → {self.dest_table} ({self.load_type})"


@dataclass(frozen=True)
class JobPurpose:
    """What a job moves: the purposes of its tables, in destination order (a job is the same job
    whatever order its request lists the tables in)."""

    tables: tuple[RunPurpose, ...]

    @classmethod
    def of(cls, purposes: Iterable[RunPurpose]) -> JobPurpose:
        return cls(tuple(sorted(purposes, key=lambda purpose: purpose.dest_table)))

    @classmethod
    def of_entries(cls, entries: Iterable[LedgerEntry]) -> JobPurpose:
        return cls.of(entry.purpose() for entry in entries)

    def matches(self, other: JobPurpose) -> bool:
        return len(self.tables) == len(other.tables) and all(
            mine.matches(theirs) for mine, theirs in zip(self.tables, other.tables, strict=True))

    def describe(self) -> str:
        sources = {purpose.data_source_id for purpose in self.tables}
        if len(sources) != 1:
            return "; ".join(purpose.describe() for purpose in self.tables)
        tables = ", ".join(purpose.describe_table() for purpose in self.tables)
        return f"data source {sources.pop()}: {tables}"
