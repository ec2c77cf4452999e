"""An in-memory `Source` for unit tests of the runner and the handler (no database).

A table is a list of row dicts with its columns; a session copies the rows of every table when it
opens, so rows added afterwards are not seen, in any table (as in a REPEATABLE READ transaction).
Windows work on an INT64 cursor (high = MAX + 1) or a TIMESTAMP cursor (high = the clock minus the
lag). `failures` makes the next sessions fail, one exception each, at a chosen step, to exercise
the runner's retries; `on_table` runs as each table is reflected (a writer committing meanwhile).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyarrow as pa

from worker.columns import Column, arrow_schema, bq_arrow_type
from worker.errors import ConfigurationError, SourceSchemaError
from worker.messages import EtlRunRequest, TableSpec
from worker.window import CursorValue, Window, boundary

Step = Literal["open", "read"]


def column(name: str, bq_type: str) -> Column:
    return Column(name, bq_type.lower(), bq_arrow_type(bq_type), bq_type)


@dataclass
class MemoryTable:
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """Raise `error` at `step` of one session: on opening it, or after `after_batches` batches
    (counted over the session's tables, in the order they are read)."""

    error: Exception
    step: Step = "read"
    after_batches: int = 0


class MemorySource:
    name = "memory"

    def __init__(self, tables: dict[str, MemoryTable],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.tables = tables
        self.clock = clock
        self.failures: list[Failure] = []
        self.snapshots_opened = 0  # sessions, one per attempt of a job
        self.on_open: Callable[[], None] | None = None  # runs as a snapshot opens (a concurrent writer)
        self.on_table: Callable[[str], None] | None = None  # runs as a table is reflected (its name)

    @contextmanager
    def session(self, request: EtlRunRequest, log_from: str | None = None) -> Iterator[MemorySession]:
        self.snapshots_opened += 1
        if self.on_open is not None:
            self.on_open()
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None and failure.step == "open":
            raise failure.error
        yield MemorySession(self, self.clock(), failure)

    @contextmanager
    def snapshot(self, request: EtlRunRequest) -> Iterator[MemorySnapshot]:
        (spec,) = request.table_specs()
        with self.session(request) as session:
            yield session.table(spec)


class MemorySession:
    """Every table's rows as they were when the session opened."""

    def __init__(self, source: MemorySource, now: datetime, failure: Failure | None) -> None:
        self._source = source
        self._rows = {name: [dict(row) for row in table.rows] for name, table in source.tables.items()}
        self._failure = failure
        self.batches_read = 0
        self.snapshot_at = now
        self.local_clock = now.replace(tzinfo=None)  # the memory source's session zone is UTC

    def table(self, spec: TableSpec) -> MemorySnapshot:
        if self._source.on_table is not None:
            self._source.on_table(spec.source_table_name)
        table = self._source.tables.get(spec.source_table_name)
        if table is None or spec.source_table_name not in self._rows:
            raise SourceSchemaError(f"source table not found: {spec.source_table_name}")
        return MemorySnapshot(table, self._rows[spec.source_table_name], spec, self)

    def check_failure(self) -> None:
        """Raise the session's failure once `after_batches` batches have been read."""
        if self._failure is not None and self.batches_read == self._failure.after_batches:
            raise self._failure.error


class MemorySnapshot:
    """One table of a session (a `SourceTable`)."""

    def __init__(self, table: MemoryTable, rows: list[dict[str, Any]], spec: TableSpec,
                 session: MemorySession) -> None:
        names = spec.selected_columns or [col.name for col in table.columns]
        by_name = {col.name: col for col in table.columns}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise SourceSchemaError(f"column {missing[0]!r} not found in source table")
        self._columns = tuple(by_name[name] for name in names)
        self._key = tuple(spec.primary_key or table.primary_key)
        self._rows = rows
        self._cursor = spec.timestamp_column
        self._session = session
        self._now = session.snapshot_at
        self.snapshot_at = session.snapshot_at
        self.local_clock = session.local_clock
        self.values_nulled: dict[str, int] = {}
        self.split_reads = 0

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    def plan_window(self, lows: Sequence[str], lag_s: float, high: str | None = None) -> Window:
        assert self._cursor is not None, "plan_window needs timestamp_column"
        integer = self._cursor_type() == "INT64"
        parsed: list[CursorValue] = [int(t) if integer else _instant(t) for t in lows if t]
        low = max(parsed) if parsed else None
        top: CursorValue
        if high is not None:  # a resumed run's fixed high
            top = int(high) if integer else _instant(high)
        elif integer:
            top = max((r[self._cursor] for r in self._rows if r[self._cursor] is not None),
                       default=-(2**63) - 1) + 1
        else:
            top = self._now - timedelta(seconds=lag_s)
        if low is not None and top <= low:  # type: ignore[operator]
            top = low
        return Window(self._cursor, low, top)

    def split_point(self, window: Window, rows: int) -> CursorValue | None:
        values = sorted(row[window.column] for row in self._selected(window))
        self.split_reads += 1

        def above(value: CursorValue) -> CursorValue | None:
            return next((v for v in values if v > value), None)

        return boundary(values[rows] if len(values) > rows else None, values[0] if values else None, above)

    def count_rows(self, window: Window | None) -> int:
        return len(self._selected(window))

    def iter_batches(self, window: Window | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        rows = self._selected(window)
        schema = arrow_schema(self._columns)
        for number in itertools.count():
            self._session.check_failure()
            chunk = rows[number * batch_rows:(number + 1) * batch_rows]
            if not chunk:
                return
            self._session.batches_read += 1
            yield pa.RecordBatch.from_pylist([{c.name: r[c.name] for c in self._columns} for r in chunk],
                                             schema=schema)

    def column(self, source_name: str) -> Column:
        for col in self._columns:
            if col.name == source_name:
                return col
        raise SourceSchemaError(f"column {source_name!r} is not loaded")

    @property
    def key_columns(self) -> tuple[Column, ...]:
        if not self._key:
            raise ConfigurationError("the table has no primary key: give primary_key")
        return tuple(self.column(name) for name in self._key)

    def iter_keys(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        schema = arrow_schema(self.key_columns)
        for start in range(0, len(self._rows), batch_rows):
            chunk = self._rows[start:start + batch_rows]
            yield pa.RecordBatch.from_pylist([{name: r[name] for name in self._key} for r in chunk],
                                             schema=schema)

    def _selected(self, window: Window | None) -> list[dict[str, Any]]:
        if window is None:
            return self._rows
        cursor = window.column

        def inside(row: dict[str, Any]) -> bool:
            value = row[cursor]
            return value is not None and (window.low is None or value >= window.low) and value < window.high

        return [row for row in self._rows if inside(row)]

    def _cursor_type(self) -> str:
        return next(col.bq_type for col in self._columns if col.name == self._cursor)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
