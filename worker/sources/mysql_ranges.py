"""One primary-key range of a MySQL/MariaDB table, read through the raw text-protocol reader on its
own connection and its own consistent snapshot: the unit of a chunked parallel read (issue 16).

MySQL cannot share a consistent snapshot between connections, so parallel readers of one table are
offered only in the chunked mode: each range is consistent in itself (one `START TRANSACTION WITH
CONSISTENT SNAPSHOT` per range), the ranges together are not one point in time. The key must be the
table's single-column integer primary key (NOT NULL by definition, so every row falls in exactly one
range); a composite or non-integer key is refused, not guessed at. Ranges are half-open,
`low <= key < high`, and either bound may be None (unbounded), so consecutive ranges from
`key_ranges` cover every key, also keys inserted beyond the bounds read when they were planned.
This module never imports a dialect (docs/sources.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from worker.errors import ConfigurationError
from worker.sources import mysql_raw
from worker.sources.arrays import NulledValues
from worker.sources.dialect import FastRead


@dataclass(frozen=True)
class KeyRange:
    """Keys `low <= key < high`; None: unbounded on that side."""

    low: int | None = None
    high: int | None = None

    def where(self, key: sa.ColumnElement[Any]) -> tuple[sa.ColumnElement[bool], ...]:
        low = () if self.low is None else (key >= self.low,)
        return low + (() if self.high is None else (key < self.high,))


def range_key(table: sa.Table) -> sa.Column[Any]:
    """The table's primary key, which must be one integer column (a range's bounds are integers)."""
    columns = list(table.primary_key.columns)
    if len(columns) != 1:
        raise ConfigurationError(
            f"{table.name}: key ranges need a single-column primary key, found {len(columns)} columns")
    (column,) = columns
    if not isinstance(column.type, sa.Integer):
        raise ConfigurationError(f"{table.name}: key ranges need an integer primary key, "
                                 f"{column.name} is {column.type}")
    return column


def key_ranges(conn: sa.Connection, table: sa.Table, count: int) -> list[KeyRange]:
    """`count` consecutive ranges of equal key width between MIN and MAX of the key, the first
    unbounded below and the last above (fewer when the table holds fewer keys)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    key = range_key(table)
    low, high = conn.execute(sa.select(sa.func.min(key), sa.func.max(key))).one()
    if low is None or count == 1:
        return [KeyRange()]
    parts = max(1, min(count, int(high) - int(low) + 1))
    cuts = [int(low) + (int(high) - int(low) + 1) * i // parts for i in range(1, parts)]
    bounds: list[int | None] = [None, *cuts, None]
    return [KeyRange(bounds[i], bounds[i + 1]) for i in range(parts)]


def range_read(read: FastRead, conn: sa.Connection, key_range: KeyRange,
               nulled: NulledValues | None = None) -> FastRead:
    """`read` restricted to `key_range`, on `conn`, counting its nulled values in `nulled` (its own
    tally by default: add it to the run's once the range is done)."""
    where = (*read.where, *key_range.where(range_key(read.table)))
    tally = nulled if nulled is not None else NulledValues(strict=read.nulled.strict)
    return dataclasses.replace(read, conn=conn, where=where, nulled=tally, readers=None)


def open_range_snapshot(conn: sa.Connection) -> None:
    """The session's snapshot statements (`MySQLDialect.open_snapshot`), on a range's connection:
    a consistent read-only snapshot, TIMESTAMP read in UTC."""
    conn.execute(sa.text(mysql_raw.START_SNAPSHOT_SQL))
    conn.execute(sa.text(mysql_raw.UTC_SESSION_SQL))


def range_batches(engine: sa.Engine, read: FastRead, key_range: KeyRange,
                  nulled: NulledValues | None = None) -> Iterator[pa.RecordBatch]:
    """The batches of `read` (a table's plan: fields, window, batch size) whose key lies in
    `key_range`, read by the raw reader on a new connection of `engine` (the source's engine: its
    isolation level and charset) in a consistent snapshot of its own. A table the raw reader cannot
    carry exactly is refused (ConfigurationError): it reads unchunked through the generic path."""
    finishes = mysql_raw.plan_raw(read)
    if finishes is None:
        raise ConfigurationError(f"{read.table.name}: a column the raw reader cannot carry; "
                                 "read the table in one snapshot")
    with engine.connect() as conn:
        open_range_snapshot(conn)
        yield from mysql_raw.raw_batches(range_read(read, conn, key_range, nulled), finishes)
        conn.rollback()  # read only: nothing to keep
