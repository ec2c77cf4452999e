"""What every cdc table shares, whatever the change log (pg_cdc: PostgreSQL's slot; mysql_cdc: the
binlog): a `SourceTable` of the reflected table whose batches carry the staged change columns, and
the first run's snapshot read as inserts. A subclass reads its log's changes and reports the range.

Both logs' changes are converted the same way (`ChangeBuffer`): written into a temporary table of
the source columns' own types, then read back through the ordinary readers, so that a change's
values become exactly what a snapshot read of the same row gives. Only how the temporary table is
created and how a slice of changes is written into it are the dialect's."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
import sqlalchemy as sa

from worker.cdc import meta
from worker.cdc.changes import Change, Counts
from worker.cdc.lsn import format_lsn
from worker.columns import Column, arrow_schema
from worker.errors import ConfigurationError
from worker.sources.base import LogRange
from worker.sources.dialect import FastRead, Field, SqlDialect
from worker.sources.sqlalchemy_source import SqlAlchemyTable
from worker.sources.typemap import target
from worker.window import Window

V = TypeVar("V")
TEMP_TABLE = "_etl_cdc_changes"  # per connection (a temporary table): one name serves every run


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
    def report(self) -> dict[str, Any]:
        """What run.completed says of the range (docs/events.md, `cdc`): what every change log
        reports, then the log's own fields (`_log_report`)."""
        newest = self.counts.newest_commit
        start = self.log_range.start
        return {
            "snapshot": self.log_range.snapshot,
            "start": format_lsn(start) if start is not None else None,
            "end": format_lsn(self.log_range.end),
            **self.counts.report(),
            "transactions": self.counts.transactions,
            "kept_columns": self.kept_columns(),
            "skipped_transactions": self.counts.skipped,
            "newest_change_at": newest.isoformat() if newest else None,
            **self._log_report(),
        }

    @abstractmethod
    def _log_report(self) -> dict[str, Any]:
        """The change log's own fields of `report` (its slot, or its binlog positions and replica id)."""

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


class ChangeBuffer(ABC, Generic[V]):
    """Changes waiting to become one Arrow batch: written into a temporary table of the source's
    own column types, then read back by the ordinary readers (same conversions as a snapshot).
    A dialect creates the table (`_create`) and writes a slice into it (`_write`)."""

    # The op column as SQLAlchemy reads it back: the dialect's own column type for it.
    _OP_TYPE: ClassVar[sa.types.TypeEngine[Any]] = sa.Text()

    def __init__(self, conn: sa.Connection, dialect: SqlDialect, base: SqlAlchemyTable,
                 staged: tuple[Column, ...], batch_rows: int) -> None:
        self._conn = conn
        self._dialect = dialect
        self._base = base
        self._batch_rows = batch_rows
        self._changes: list[Change[V]] = []
        self._sources = tuple(col.source_name or col.name for col in base.columns)
        self._bq_names = {col.source_name or col.name: col.name for col in base.columns}
        self._create(base)
        self._table = self._temp_table(base.sa_table)
        fields = tuple(base.retargeted(self._table))
        metas = tuple(Field(col, target(col.bq_type), self._table.c[col.name].label(col.name))
                      for col in meta.CHANGE_COLUMNS)
        self._read = FastRead(conn, self._table, (*fields, *metas), (), arrow_schema(staged), batch_rows,
                              base.nulled)

    def add(self, change: Change[V]) -> bool:
        """Keep `change`; True once the buffer holds a batch (the caller then flushes)."""
        self._changes.append(change)
        return len(self._changes) >= self._batch_rows

    def flush(self) -> Iterator[pa.RecordBatch]:
        """The kept changes as Arrow batches, read back from the temporary table."""
        if not self._changes:
            return
        changes, self._changes = self._changes, []
        self._write(changes)
        yield from self._base.read_batches(self._read)

    def _unchanged(self, change: Change[V]) -> str | None:
        """The change-column text naming the columns whose destination value `change` keeps."""
        return meta.unchanged_text(tuple(self._bq_names[name] for name in change.unchanged))

    def _staged_names(self) -> str:
        """The temporary table's columns, quoted, in the order a written row gives them."""
        quote = self._conn.dialect.identifier_preparer.quote
        return ", ".join(quote(name) for name in (*self._sources, meta.SEQ, meta.OP, meta.UNCHANGED))

    def _temp_table(self, source: sa.Table) -> sa.Table:
        """The temporary table as the readers see it: the source's columns, then the change columns."""
        kept = (sa.Column(col.name, col.type) for col in source.columns if col.name in self._sources)
        return sa.Table(TEMP_TABLE, sa.MetaData(), *kept,
                        sa.Column(meta.SEQ, sa.BigInteger), sa.Column(meta.OP, self._OP_TYPE),
                        sa.Column(meta.UNCHANGED, sa.Text))

    @abstractmethod
    def _create(self, base: SqlAlchemyTable) -> None:
        """Create the (empty) temporary table on `self._conn`, every column as the source's."""

    @abstractmethod
    def _write(self, changes: list[Change[V]]) -> None:
        """Empty the temporary table, then write `changes` into it."""
