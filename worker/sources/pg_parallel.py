"""Parallel COPY readers of one PostgreSQL table, all in the session's ONE snapshot.

The session's transaction exports its snapshot (`pg_export_snapshot()`); each reader opens its own
connection, starts a REPEATABLE READ, READ ONLY transaction and imports it (`SET TRANSACTION
SNAPSHOT`) before its first query, so every reader sees exactly what the session sees: the same
rows, the same COUNT(*), whatever commits meanwhile. The table's heap is split into block ranges
(`ctid >= '(a,0)' AND ctid < '(b,0)'`, a TID range scan), the last one open-ended, so every row
version the snapshot sees lies in exactly one range. Each reader runs the session's own COPY
(`pg_copy`) with its range added and hands its batches over a bounded queue; the consumer gets
them in arrival order (row order is not kept, nothing downstream relies on it).

Only plain tables and materialized views have a heap to split (a view, a foreign or a partitioned
table is read by the one connection), and a window is split only when PostgreSQL's planner would
read a range by scanning it: a small window on an indexed cursor (an incremental run, a sub-window
of a big backfill) is read by its index, which every reader would walk whole, so one connection
reads it. Values nulled by a reader are counted in its own tally and
added to the session's once it ends.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from worker.sources import pg_copy
from worker.sources.arrays import NulledValues
from worker.sources.dialect import FastRead, Readers
from worker.sources.read_ahead import merged

log = logging.getLogger(__name__)
_HEAP_KINDS = ("r", "m")  # pg_class.relkind of relations with a heap of their own


def block_ranges(blocks: int, readers: int) -> list[tuple[int, int | None]]:
    """`readers` consecutive block ranges [start, end) covering the heap; the last has no end (a row
    the snapshot sees cannot lie beyond the blocks counted in it, but nothing is lost if one did)."""
    count = max(1, min(readers, blocks))
    starts = [blocks * i // count for i in range(count)]
    return [(start, starts[i + 1] if i + 1 < count else None) for i, start in enumerate(starts)]


def parallel_batches(read: FastRead) -> Iterator[pa.RecordBatch] | None:
    """The session's COPY batches read by `read.readers` connections, or None when this table
    cannot be read so (one reader asked, a column COPY cannot carry, no heap to split)."""
    readers = read.readers
    if readers is None or readers.count < 2:
        return None
    columns = pg_copy.copy_columns(read)
    blocks = _heap_blocks(read) if columns is not None else None
    if columns is None or blocks is None:
        return None
    ranges = block_ranges(blocks, readers.count)
    if read.where and not _scans_its_range(read, ranges[0]):
        log.info("reading %s with one connection: the window is read by its index", read.table.name)
        return None
    snapshot = str(read.conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
    log.info("reading %s with %d COPY readers in snapshot %s", read.table.name, len(ranges), snapshot)
    return _merged(read, readers, columns, snapshot, ranges)


def _heap_blocks(read: FastRead) -> int | None:
    table = read.table
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    kind, size = read.conn.execute(
        sa.text("SELECT relkind, pg_relation_size(oid) / current_setting('block_size')::int "
                "FROM pg_class WHERE oid = CAST(:name AS regclass)"), {"name": name}).one()
    return int(size) if kind in _HEAP_KINDS else None


def _scans_its_range(read: FastRead, block_range: tuple[int, int | None]) -> bool:
    """Whether PostgreSQL reads a reader's rows by scanning its block range (a TID range scan).
    A small window on an indexed cursor is read by the index instead, every reader then fetching
    every row of the window to keep its share: one connection reads it once."""
    part = dataclasses.replace(read, where=(*read.where, *_range_where(*block_range)))
    plan = read.conn.exec_driver_sql(f"EXPLAIN {pg_copy.bound_select(part)}").scalars().all()
    return any("Tid Range Scan" in str(line) for line in plan)


def _range_where(start: int, end: int | None) -> tuple[sa.ColumnElement[bool], ...]:
    ctid: sa.ColumnElement[Any] = sa.literal_column("ctid")

    def tid(block: int) -> sa.ColumnElement[Any]:
        return sa.literal_column(f"CAST('({int(block)},0)' AS tid)")

    return (ctid >= tid(start),) if end is None else (ctid >= tid(start), ctid < tid(end))


def _range_batches(read: FastRead, readers: Readers, columns: list[Any], snapshot: str,
                  block_range: tuple[int, int | None], nulled: NulledValues) -> Iterator[pa.RecordBatch]:
    """One reader: its own connection in the session's snapshot, the session's COPY of its range."""
    with readers.connect() as conn:
        import_snapshot(conn, snapshot)
        part = dataclasses.replace(read, conn=conn, nulled=nulled, readers=None,
                                   where=(*read.where, *_range_where(*block_range)))
        yield from pg_copy.copy_batches(part, columns)


def import_snapshot(conn: sa.Connection, snapshot: str) -> None:
    """The reader's transaction sees the session's snapshot: these must be its first statements
    (an import needs REPEATABLE READ, and READ ONLY since the exporting transaction is)."""
    conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
    finally:
        cursor.close()
    conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # as the session's: COPY's timestamptz text


def _merged(read: FastRead, readers: Readers, columns: list[Any], snapshot: str,
            ranges: list[tuple[int, int | None]]) -> Iterator[pa.RecordBatch]:
    tallies = [NulledValues(strict=read.nulled.strict) for _ in ranges]
    yield from merged([functools.partial(_range_batches, read, readers, columns, snapshot, r, tally)
                       for r, tally in zip(ranges, tallies, strict=True)], name="pg-reader")
    for tally in tallies:
        for column, count in tally.counts.items():
            read.nulled.counts[column] = read.nulled.counts.get(column, 0) + count
