"""MySQL's fast path: the generic SELECT on the snapshot's own connection, its values taken as the
bytes of MySQL's text protocol, unconverted, and turned into the generic path's columns by Arrow.

Profiles of the generic path on MySQL showed mysqlclient's per-value conversion (int(), Decimal(),
str decoding, then SQLAlchemy's processors) taking most of the time; the server itself sends a
million rows in about as long as the client needs to hold them as bytes. So the statement is the
generic one (same columns, read expressions and window, bound by mysqlclient's own `mogrify`; a
cast to text whose text the protocol sends for the column anyway is left out: `sent_expr`) and runs
in the same consistent snapshot, unbuffered (`SSCursor`); only the conversion changes:

| target | the text protocol's bytes become |
|---|---|
| BYTES | themselves |
| STRING (text, ENUM, SET) | UTF-8 text (the connection's character set is utf8mb4) |
| INT64, FLOAT64, NUMERIC, BIGNUMERIC, BOOL (TINYINT(1)) | a vectorised cast of the text |
| FLOAT64 of a MariaDB DOUBLE | its eight bytes, sent as hex (`mysql_doubles`: text costs the server most) |
| DATE, DATETIME, TIMESTAMP (read as text in a UTC session) | a vectorised cast of strict ISO text |
| JSON | `fastjson.json_column`: the generic JSON converter's result, proven in bulk per batch |

A column with a converter is carried the way its converter declares (`Converter.mysql_raw`, in the
type map); one without, as mysqlclient's own value of its type (`_PLAIN`). A batch whose column
holds a value the cast refuses (a zero date, a TINYINT(1) holding 2, what the driver could not hold
either) converts that column per value, from what mysqlclient would have returned for the same
text, with the generic converter: NULLs are counted exactly alike. Any other column (BIT, TIME, a
converter declaring no form) and strict mode keep the whole table on the generic path: `plan_raw`
returns None. Where every text of the table is UTF-8 and no column is BYTES, the server sends each
row as one line (`line_value`): one bytes object per row instead of one per value, split by Arrow.
This module never imports a dialect (docs/sources.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from worker.sources.arrays import NulledValues
from worker.sources.converters import TEXT_ITSELF, FromText, cast_from_text
from worker.sources.dialect import FastRead, Field
from worker.sources.fastpath import compiled_select, from_text, gc_paused, inner_expr
from worker.sources.mysql_doubles import bits_expr, doubles_from_bits, sent_as_bits
from worker.sources.read_ahead import read_ahead
from worker.sources.typemap import ReadMode

log = logging.getLogger(__name__)

# A column turns a batch's raw values (binary) into the generic path's array.
Finish = Callable[[pa.Array, Field, NulledValues], pa.Array]
Mask = npt.NDArray[np.bool_]  # one flag per value of a batch (rows x columns)
Positions = npt.NDArray[np.int32]  # byte offsets into a batch's lines


# The statements that open a consistent, read-only snapshot reading TIMESTAMP in UTC: the session's
# (`MySQLDialect.open_snapshot`, which reads its clock between the two) and every key range's
# (`mysql_ranges`): one text, so a range reads each value exactly as the session does.
START_SNAPSHOT_SQL = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"
UTC_SESSION_SQL = "SET time_zone = '+00:00'"


# --- conversions -----------------------------------------------------------------------------------
def _text(raw: pa.Array) -> pa.Array:
    return raw.cast(pa.string())  # validates UTF-8 as mysqlclient's decoding would


def _binary(raw: pa.Array, _field: Field, _nulled: NulledValues) -> pa.Array:
    return raw


def _from_text(form: FromText) -> Finish:
    """The bytes as UTF-8 text, then the form (what mysqlclient returns for a text it refuses, then
    the column's converter, per value)."""
    def finish(raw: pa.Array, field: Field, nulled: NulledValues) -> pa.Array:
        convert = field.target.convert
        return from_text(_text(raw), form, field.column, None if convert is None else convert.per_value,
                         nulled)

    return finish


# --- planning --------------------------------------------------------------------------------------
def _integer(field: Field) -> Finish | None:
    # BIT arrives as raw bytes (SQLAlchemy turns them into an int): not text, so generic.
    return None if isinstance(inner_expr(field.expr).type, mysql.BIT) else _from_text(cast_from_text(int))


# A column without a converter holds mysqlclient's own value, which this reader knows how to rebuild
# from the text protocol, by (BigQuery type, read mode); a converter declares its own form
# (`Converter.mysql_raw`). Anything else keeps the table on the generic path.
_PLAIN: dict[tuple[str, ReadMode], Callable[[Field], Finish | None]] = {
    ("INT64", "native"): _integer,
    ("NUMERIC", "native"): _integer,  # BIGINT UNSIGNED (BIT(64): not text)
    ("FLOAT64", "raw"): lambda _f: _from_text(cast_from_text(float)),
    ("STRING", "native"): lambda _f: _from_text(TEXT_ITSELF),
    ("STRING", "raw"): lambda _f: _from_text(TEXT_ITSELF),  # ENUM, SET: the driver's text
    ("STRING", "text"): lambda _f: _from_text(TEXT_ITSELF),
    ("BYTES", "native"): lambda _f: _binary,
}


def _plan_column(field: Field, dialect: sa.Dialect) -> Finish | None:
    if sent_as_bits(field, dialect):
        return doubles_from_bits
    target = field.target
    if target.repeated:
        return None
    if target.convert is None:
        rule = _PLAIN.get((target.bq_type, target.read))
        return rule(field) if rule is not None else None
    form = target.convert.mysql_raw
    return _from_text(form) if form is not None else None


def plan_raw(read: FastRead) -> list[Finish] | None:
    """Each column's finish, or None when any column cannot be proven identical this way."""
    if read.nulled.strict:
        return None  # strict mode stops at the first bad value, in the generic path's order
    planned = [_plan_column(field, read.conn.dialect) for field in read.fields]
    if any(finish is None for finish in planned):
        return None
    return [finish for finish in planned if finish is not None]


# --- the statement and the stream ------------------------------------------------------------------
def raw_statement(read: FastRead, cursor: Any, lines: bool = False) -> str:
    """The generic SELECT's values (`sent_expr`), its parameters bound by mysqlclient; `lines`: as
    one line per row (`line_value`)."""
    compiled = compiled_select(read, [line_value(read)] if lines else _sent(read))
    params = tuple(compiled.params[name] for name in (compiled.positiontup or ()))
    bound = cursor.mogrify(str(compiled), params)
    return bound.decode("utf-8") if isinstance(bound, bytes) else str(bound)


# The generic SELECT reads these types cast to text (read mode "text": MySQLdb would turn a zero
# date into None, which could not be told from NULL), and the cast's text is the one the text
# protocol sends for the column itself: same format, fractional digits and session time zone, and
# for JSON the same document. The raw reader takes the protocol's bytes unconverted, so it sends the
# column: the casts cost the server more than the rest of the row (measured on the bench table,
# 5M rows: CAST(timestamp(6) AS CHAR) 1.8 s of server CPU against 0.9 s for the column, DATE 1.2
# against 0.75, JSON 2.4 against 1.6; the whole line 8.6-9.6 s against 6.1-6.3 s).
# By BigQuery type, since MariaDB's JSON is a LONGTEXT column (its type refined by its CHECK).
_SENT_AS_ITS_CAST = frozenset({"DATE", "DATETIME", "TIMESTAMP", "JSON"})


def sent_expr(field: Field, dialect: sa.Dialect) -> sa.ColumnElement[Any]:
    """What the raw reader selects for a field: the generic SELECT's read expression, unlabelled;
    the column itself where that expression is a cast to text the protocol sends anyway; a MariaDB
    DOUBLE's bytes (`mysql_doubles`)."""
    if sent_as_bits(field, dialect):
        return bits_expr(field)
    expr = inner_expr(field.expr)
    target = field.target
    if (target.read == "text" and target.bq_type in _SENT_AS_ITS_CAST and isinstance(expr, sa.Cast)
            and isinstance(expr.clause, sa.Column)):
        return expr.clause
    return expr


def _sent(read: FastRead) -> list[sa.ColumnElement[Any]]:
    return [sent_expr(f, read.conn.dialect) for f in read.fields]


# --- one line per row ------------------------------------------------------------------------------
# The server joins a row's texts into one value, so the driver builds one bytes object per row
# rather than one per value (the client's largest cost after JSON). 0xFF separates values and 0xFE
# stands for NULL: no UTF-8 text holds either byte, so nothing needs escaping (escaping with
# REPLACE cost the server 50 % more CPU; this form costs it nothing measurable). CONCAT_WS calls the
# same val_str() the text protocol sends, but under a binary separator its result is binary: values
# are not converted to the connection's utf8mb4, so only tables whose every text is already UTF-8
# (and holds no BLOB, where 0xFF may occur) are read so.
_SEPARATOR = b"\xff"
_NULL = b"\xfe"
_UTF8 = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii"})


def line_value(read: FastRead) -> sa.ColumnElement[Any]:
    """The generic SELECT's values as one binary line per row: texts separated by 0xFF, NULL as 0xFE."""
    separator: sa.ColumnElement[Any] = sa.literal_column("CAST(0xFF AS BINARY)")
    null: sa.ColumnElement[Any] = sa.literal_column("CAST(0xFE AS BINARY)")
    return sa.func.concat_ws(separator, *(sa.func.ifnull(value, null) for value in _sent(read)))


def lines_allowed(read: FastRead) -> bool:
    """Whether every value's text is UTF-8 on the server already: no BYTES column, and every column
    of the table in a UTF-8 character set (information_schema says; the whole table, since a read
    expression may hide which column it reads)."""
    if any(f.target.bq_type == "BYTES" for f in read.fields):
        return False
    table = read.table
    schema = table.schema if table.schema is not None else sa.func.database()
    charsets = read.conn.execute(sa.select(_COLUMNS.c.character_set_name).distinct().where(
        _COLUMNS.c.table_schema == schema, _COLUMNS.c.table_name == table.name)).scalars().all()
    return all(charset is None or str(charset).lower() in _UTF8 for charset in charsets)


_COLUMNS = sa.table("COLUMNS", sa.column("table_schema"), sa.column("table_name"),
                    sa.column("character_set_name"), schema="information_schema")


def _line_columns(cursor: Any, batch_rows: int, width: int) -> list[pa.Array] | None:
    """The next rows (one line each) split into one binary array per column (None at the end)."""
    rows = cursor.fetchmany(batch_rows)
    if not rows:
        return None
    lines = pa.array([line for (line,) in rows], type=pa.binary())
    values, nulls = _split_lines(lines, width)
    return [pc.take(values, _column_indices(column, len(rows), width, nulls)) for column in range(width)]


def _split_lines(lines: pa.Array, width: int) -> tuple[pa.Array, Mask]:
    """The lines' values, unsplit: one binary array over the lines' own bytes whose even items are
    the values, row after row (its odd items are the separators between them), and per value
    whether it is the NULL mark. Found by numpy on the bytes; split_pattern, a take per column and
    replacing the NULL marks copied every value three times and cost 30 % of the client's CPU."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1)
    data_buffer = lines.buffers()[2] or pa.py_buffer(b"")
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    separators = np.flatnonzero(data[: offsets[-1]] == _SEPARATOR[0]).astype(np.int32)
    rows = len(lines)
    if len(separators) != rows * (width - 1):
        raise RuntimeError("a MySQL value held byte 0xFF, which no UTF-8 text holds")  # never guess
    inner = separators.reshape(rows, width - 1)
    # Each row's separators lie inside it (with the total right, every row has exactly width - 1).
    if width > 1 and (np.any(inner[:, 0] < offsets[:-1]) or np.any(inner[:, -1] >= offsets[1:])):
        raise RuntimeError("a MySQL value held byte 0xFF, which no UTF-8 text holds")
    starts = np.empty((rows, width), dtype=np.int32)
    ends = np.empty((rows, width), dtype=np.int32)
    starts[:, 0], starts[:, 1:] = offsets[:-1], inner + 1
    ends[:, -1], ends[:, :-1] = offsets[1:], inner
    bounds = np.stack((starts.ravel(), ends.ravel()), axis=1).ravel()  # s0, e0, s1, e1, ...
    values = pa.Array.from_buffers(pa.binary(), len(bounds) - 1, [None, pa.py_buffer(bounds), data_buffer])
    return values, _null_marks(data, starts, ends)


def _null_marks(data: npt.NDArray[np.uint8], starts: Positions, ends: Positions) -> Mask:
    """Per value: is it the one byte 0xFE that stands for NULL?"""
    if not len(data):
        return np.zeros(starts.shape, dtype=bool)
    marks: Mask = (ends - starts == 1) & (data[np.minimum(starts, len(data) - 1)] == _NULL[0])
    return marks


def _column_indices(column: int, rows: int, width: int, nulls: Mask) -> pa.Array:
    """The column's items of `_split_lines`' values, a NULL index (a NULL value) at each NULL mark."""
    indices = np.arange(2 * column, 2 * rows * width, 2 * width, dtype=np.int64)
    return pa.array(indices, mask=nulls[:, column])


def fast_batches(read: FastRead) -> Iterator[pa.RecordBatch] | None:
    """The raw reader's batches when every column can be carried exactly, else None (generic)."""
    finishes = plan_raw(read)
    if finishes is None:
        return None
    log.debug("reading %s as raw text protocol values", read.table.name)
    return raw_batches(read, finishes)


def raw_batches(read: FastRead, finishes: list[Finish]) -> Iterator[pa.RecordBatch]:
    """The generic path's batches (exactly `batch_rows` rows, the last shorter), read raw."""
    with raw_result(read) as fetch, gc_paused():
        # The next rows are fetched and made Arrow columns of bytes on a thread (the driver waits
        # on the server without the GIL) while Arrow converts these (mostly without it).
        for raw in read_ahead(fetch, name="mysql-fetch"):
            yield to_batch(raw, finishes, read)


@contextmanager
def raw_result(read: FastRead) -> Iterator[Callable[[], list[pa.Array] | None]]:
    """The raw statement running unbuffered on the read's connection, with no converters; yields
    the fetch of its next `batch_rows` rows as one binary array per column (None at the end).
    Closing the cursor reads what an early stop left, so the connection stays usable."""
    import MySQLdb.cursors  # the dialect's driver; imported here so the module loads without it

    dbapi = read.conn.connection.dbapi_connection
    assert dbapi is not None
    lines = lines_allowed(read)
    cursor = dbapi.cursor(MySQLdb.cursors.SSCursor)
    try:
        statement = raw_statement(read, cursor, lines)
        converters = dbapi.converter
        dbapi.converter = {}  # the unbuffered result takes its converters now: none, raw bytes
        try:
            cursor.execute(statement)
        finally:
            dbapi.converter = converters
        yield (partial(_line_columns, cursor, read.batch_rows, len(read.fields)) if lines
               else partial(_raw_columns, cursor, read.batch_rows))
    finally:
        cursor.close()


def _raw_columns(cursor: Any, batch_rows: int) -> list[pa.Array] | None:
    """The next rows as one binary array per column (None at the end)."""
    rows = cursor.fetchmany(batch_rows)
    return [pa.array(values, type=pa.binary()) for values in zip(*rows, strict=True)] if rows else None


def to_batch(raw: list[pa.Array], finishes: list[Finish], read: FastRead) -> pa.RecordBatch:
    """One batch of the generic path's arrays from one fetch's raw columns."""
    arrays = [
        finish(values, field, read.nulled)
        for values, finish, field in zip(raw, finishes, read.fields, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)
