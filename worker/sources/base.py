"""What a source offers the runner: one consistent snapshot of the source (a session), in which
each table of a job is read in Arrow batches.

A session is one read-only transaction on one connection: every table read in it sees the same
data, so a job's tables keep the source's referential integrity. Tables are read one after the
other (MySQL allows one open streaming result per connection).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from worker.columns import Column
from worker.messages import EtlRunRequest, TableSpec
from worker.window import CursorValue, Window


class SourceTable(Protocol):
    """One reflected table of a session: every call sees the session's snapshot (REPEATABLE READ)."""

    @property
    def columns(self) -> tuple[Column, ...]:
        """The selected columns in request order (all columns in table order when none selected)."""
        ...

    @property
    def values_nulled(self) -> dict[str, int]:
        """Per column, values read so far that BigQuery cannot hold and were loaded as NULL
        (complete once `iter_batches` is exhausted; empty in strict mode, which raises instead)."""
        ...

    @property
    def snapshot_at(self) -> datetime:
        """The source database's clock (aware, UTC), read when the session's snapshot was opened."""
        ...

    @property
    def local_clock(self) -> datetime:
        """The same moment as the session's naive wall clock (what naive cursor values mean)."""
        ...

    def plan_window(self, lows: Sequence[str], lag_s: float, high: str | None = None) -> Window:
        """Window for a transactional run.

        `lows` are candidate inclusive starts as text (last_sync_value, the ledger's last high,
        historical_start_date); the greatest, parsed for the cursor column's type, wins; none: no
        lower bound. `high` is the source's clock, read in this snapshot, minus `lag_s` seconds
        (for a date or integer cursor: see the implementation's documentation); a given `high` (a
        resumed run's fixed one, as text) is parsed instead. A high at or below the low: empty.
        """
        ...

    def split_point(self, window: Window, rows: int) -> CursorValue | None:
        """Where the first sub-window of `window` holding at most `rows` rows ends (exclusive), or
        None when the whole window holds at most `rows` rows (`worker.sub_windows.boundary`: rows
        of one cursor value are never split, so a value with more rows makes a larger sub-window).
        Read in this snapshot with index-friendly queries on the cursor (ORDER BY ... OFFSET)."""
        ...

    def count_rows(self, window: Window | None) -> int:
        """COUNT(*) of the rows `iter_batches(window)` yields, in the same snapshot."""
        ...

    def iter_batches(self, window: Window | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Stream the rows (window None: the whole table) as batches of at most `batch_rows` rows,
        with schema `arrow_schema(self.columns)`."""
        ...

    def column(self, source_name: str) -> Column:
        """The loaded column of this source column (its BigQuery name, type); SourceSchemaError
        when it is not loaded."""
        ...

    @property
    def key_columns(self) -> tuple[Column, ...]:
        """The columns identifying a row (a merge run): the request's `primary_key`, else the
        table's own; ConfigurationError when there is neither."""
        ...

    def iter_keys(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Every row's key columns (no window: the whole table, `count_rows(None)` of them), in
        batches with schema `arrow_schema(self.key_columns)`."""
        ...


@dataclass(frozen=True)
class LogRange:
    """What a cdc run reads of the change log (positions are PostgreSQL LSNs as integers)."""

    snapshot: bool  # a first run: the table from the slot's exported snapshot, not changes
    start: int | None  # the position the ledger recorded with the last commit (None: none yet)
    end: int  # exclusive: changes committed before it (a first run: the slot's consistent point)
    slot: str
    publication: str


@runtime_checkable
class ChangeLog(Protocol):
    """What the table of a cdc run offers besides a SourceTable's reads (worker/sources/pg_cdc.py)."""

    log_range: LogRange

    @property
    def staged_columns(self) -> tuple[Column, ...]:
        """`columns` plus the change columns (worker/cdc/meta.py): the schema of its batches."""
        ...

    def report(self) -> dict[str, Any]:
        """The range and what was read of it (counts per operation, newest commit time), complete
        once `iter_batches` is exhausted."""
        ...

    def confirm(self, position: int) -> None:
        """After the commit recorded `position`: the source may forget the changes before it."""
        ...


KeyBound = tuple[Any, ...]  # one key value, one item per key column
KeyRange = tuple[KeyBound | None, KeyBound | None]  # low <= key < high; None: unbounded


@dataclass(frozen=True)
class RangeRead:
    """One item of `KeyChunked.read_key_ranges`: a batch of one key range, or its end."""

    index: int  # the range's position in the ranges asked for
    batch: pa.RecordBatch | None  # None: the range is read whole (its last item)
    rows_counted: int  # COUNT(*) of the range, in the snapshot it is read in
    read_at: datetime  # when that snapshot was opened (the source's clock, UTC)
    # On the range's end: per column, its values BigQuery cannot hold, loaded as NULL (a resumed
    # run adds up its finished chunks' counts, whichever delivery read them)
    nulled: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class KeyChunked(Protocol):
    """What a table offers a chunked catalog run (worker/catalog_chunk_run.py) besides its reads."""

    @property
    def chunk_key(self) -> tuple[str, ...]:
        """Source names of the key it splits by (empty: no key, never chunked)."""
        ...

    def key_split_points(self, rows: int) -> list[KeyBound]:
        """The key at every `rows`-th position of the key order, in the session's snapshot."""
        ...

    def key_bound(self, values: Sequence[Any]) -> KeyBound:
        """A key value as stored in a chunk plan (JSON) back in its column types, for binding."""
        ...

    def read_key_ranges(self, ranges: Sequence[KeyRange], batch_rows: int) -> Iterator[RangeRead]:
        """Each range's rows, counted and read in one snapshot (docs/modes.md has which), batches
        of several ranges interleaved when read in parallel; each range ends with its end item."""
        ...


# A one-table request's table, read in its own session (`Source.snapshot`).
SourceSnapshot = SourceTable


class SourceSession(Protocol):
    """A read-only transaction on the source: every table read in it sees the same data."""

    @property
    def snapshot_at(self) -> datetime:
        """The source database's clock (aware, UTC), read when the snapshot was opened."""
        ...

    @property
    def local_clock(self) -> datetime:
        """The same moment as the session's naive wall clock."""
        ...

    def table(self, spec: TableSpec) -> SourceTable:
        """Reflect one table of the job (its columns, names, cursor, key) in this snapshot;
        SourceSchemaError, UnsupportedTypeError, ColumnNameError, ... when it cannot be loaded.
        Call it when no batch stream of another table is open."""
        ...


class Source(Protocol):
    name: str

    def session(self, request: EtlRunRequest, log_from: str | None = None
                ) -> AbstractContextManager[SourceSession]:
        """Connect and open the snapshot (no table read yet); close everything on exit. `log_from`:
        a cdc request's position recorded by the ledger with the table's last commit."""
        ...

    def snapshot(self, request: EtlRunRequest) -> AbstractContextManager[SourceSnapshot]:
        """A one-table request: its session and its table, reflected; close everything on exit."""
        ...
