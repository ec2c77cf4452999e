"""What every cdc table shares, whatever the change log (pg_cdc: PostgreSQL's slot; mysql_cdc: the
binlog): a `SourceTable` of the reflected table whose batches carry the staged change columns, and
the first run's snapshot read as inserts. A subclass reads its log's changes and reports the range."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from worker.cdc import meta
from worker.cdc.changes import Counts
from worker.columns import Column, arrow_schema
from worker.errors import ConfigurationError
from worker.sources.base import LogRange
from worker.sources.sqlalchemy_source import SqlAlchemyTable
from worker.window import Window


def checked_base(base: SqlAlchemyTable) -> SqlAlchemyTable:
    """The reflected table, refused when a column would clash with the change columns."""
    clash = [col.name for col in base.columns if col.name in meta.CHANGE_NAMES]
    if clash:
        raise ConfigurationError(f"columns {clash} are reserved for CDC's bookkeeping: rename them with "
                                 "column_names")
    return base


class ChangeTable(ABC):
    """A cdc table: a `SourceTable` whose batches carry the staged change columns, and a
    `ChangeLog` (its range, what it read, and the source's confirmation after the commit)."""

    def __init__(self, base: SqlAlchemyTable, log_range: LogRange) -> None:
        self._base = base
        self.log_range = log_range
        self.counts = Counts()

    # --- SourceTable ----------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[Column, ...]:
        return self._base.columns

    @property
    def staged_columns(self) -> tuple[Column, ...]:
        return (*self._base.columns, *meta.CHANGE_COLUMNS)

    @property
    def values_nulled(self) -> dict[str, int]:
        return self._base.values_nulled

    @property
    def snapshot_at(self) -> datetime:
        return self._base.snapshot_at

    @property
    def local_clock(self) -> datetime:
        return self._base.local_clock

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return self._base.key_columns

    def column(self, source_name: str) -> Column:
        return self._base.column(source_name)

    def plan_window(self, lows: Sequence[str], lag_s: float) -> Window:
        raise ConfigurationError("a cdc run reads a range of the change log, not a window")

    def count_rows(self, window: Window | None) -> int:
        """The snapshot's COUNT(*) (a first run); 0 for a range of changes, whose size is known
        only once read (`counts`; run.started then says rows_expected null)."""
        return self._base.count_rows(None) if self.log_range.snapshot else 0

    def iter_keys(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        raise ConfigurationError("a cdc run reads deletes from the change log, not by reconciling keys")

    def iter_batches(self, window: Window | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        if self.log_range.snapshot:
            yield from self._snapshot_batches(batch_rows)
        else:
            yield from self._change_batches(batch_rows)

    # --- ChangeLog ------------------------------------------------------------------------------
    @abstractmethod
    def report(self) -> dict[str, Any]:
        """What run.completed says of the range (docs/events.md, `cdc`)."""

    @abstractmethod
    def confirm(self, position: int) -> None:
        """After the BigQuery commit recorded `position`."""

    def kept_columns(self) -> list[str]:
        """The BigQuery names of the columns some change did not send."""
        kept = self.counts.kept
        return sorted(col.name for col in self._base.columns if (col.source_name or col.name) in kept)

    def key_sources(self) -> tuple[str, ...]:
        return tuple(col.source_name or col.name for col in self._base.key_columns)

    def column_sources(self) -> tuple[str, ...]:
        return tuple(col.source_name or col.name for col in self._base.columns)

    # --- reading --------------------------------------------------------------------------------
    @abstractmethod
    def _change_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The range's changes, staged in commit order."""

    def _snapshot_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The snapshot's rows as inserts (the commit empties the destination first)."""
        seq = 0
        schema = arrow_schema(self.staged_columns)
        for batch in self._base.iter_batches(None, batch_rows):
            extra = [pa.array(range(seq + 1, seq + 1 + batch.num_rows), pa.int64()),
                     pa.array(["I"] * batch.num_rows, pa.string()), pa.nulls(batch.num_rows, pa.string())]
            seq += batch.num_rows
            self.counts.inserts += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=schema)
