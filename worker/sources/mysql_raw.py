"""MySQL's fast path: the generic SELECT on the snapshot's own connection, its values taken as the
bytes of MySQL's text protocol, unconverted, and turned into the generic path's columns by Arrow.

Profiles of the generic path on MySQL showed mysqlclient's per-value conversion (int(), Decimal(),
str decoding, then SQLAlchemy's processors) taking most of the time; the server itself sends a
million rows in about as long as the client needs to hold them as bytes. So the statement is the
generic one (same columns, read expressions and window, bound by mysqlclient's own `mogrify`) and
runs in the same consistent snapshot, unbuffered (`SSCursor`); only the conversion changes:

| target | the text protocol's bytes become |
|---|---|
| BYTES | themselves |
| STRING (text, ENUM, SET) | UTF-8 text (the connection's character set is utf8mb4) |
| INT64, FLOAT64, NUMERIC, BIGNUMERIC, BOOL (TINYINT(1)) | a vectorised cast of the text |
| DATE, DATETIME, TIMESTAMP (read as text in a UTC session) | a vectorised cast of strict ISO text |
| JSON | `fastjson.json_column`: the generic JSON converter's result, proven in bulk per batch |

A column with a converter is carried the way its converter declares (`Converter.mysql_raw`, in the
type map); one without, as mysqlclient's own value of its type (`_PLAIN`). A batch whose column
holds a value the cast refuses (a zero date, a TINYINT(1) holding 2, what the driver could not hold
either) converts that column per value, from what mysqlclient would have returned for the same
text, with the generic converter: NULLs are counted exactly alike. Any other column (BIT, TIME, a
converter declaring no form) and strict mode keep the whole table on the generic path: `plan_raw`
returns None. This module never imports a dialect (docs/sources.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pyarrow as pa
from sqlalchemy.dialects import mysql

from worker.sources.arrays import NulledValues
from worker.sources.converters import TEXT_ITSELF, FromText, cast_from_text
from worker.sources.dialect import FastRead, Field
from worker.sources.fastpath import compiled_select, from_text, gc_paused, inner_expr
from worker.sources.read_ahead import read_ahead
from worker.sources.typemap import ReadMode

log = logging.getLogger(__name__)

# A column turns a batch's raw values (binary) into the generic path's array.
Finish = Callable[[pa.Array, Field, NulledValues], pa.Array]


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


def _plan_column(field: Field) -> Finish | None:
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
    planned = [_plan_column(field) for field in read.fields]
    if any(finish is None for finish in planned):
        return None
    return [finish for finish in planned if finish is not None]


# --- the statement and the stream ------------------------------------------------------------------
def raw_statement(read: FastRead, cursor: Any) -> str:
    """The generic SELECT, its parameters bound by mysqlclient."""
    compiled = compiled_select(read)
    params = tuple(compiled.params[name] for name in (compiled.positiontup or ()))
    bound = cursor.mogrify(str(compiled), params)
    return bound.decode("utf-8") if isinstance(bound, bytes) else str(bound)


def fast_batches(read: FastRead) -> Iterator[pa.RecordBatch] | None:
    """The raw reader's batches when every column can be carried exactly, else None (generic)."""
    finishes = plan_raw(read)
    if finishes is None:
        return None
    log.debug("reading %s as raw text protocol values", read.table.name)
    return raw_batches(read, finishes)


def raw_batches(read: FastRead, finishes: list[Finish]) -> Iterator[pa.RecordBatch]:
    """The generic path's batches (exactly `batch_rows` rows, the last shorter), read raw."""
    import MySQLdb.cursors  # the dialect's driver; imported here so the module loads without it

    dbapi = read.conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor(MySQLdb.cursors.SSCursor)
    try:
        statement = raw_statement(read, cursor)
        converters = dbapi.converter
        dbapi.converter = {}  # the unbuffered result takes its converters now: none, raw bytes
        try:
            cursor.execute(statement)
        finally:
            dbapi.converter = converters
        with gc_paused():
            # The next rows are fetched and made Arrow columns of bytes on a thread (the driver
            # waits on the server without the GIL) while Arrow converts these (mostly without it).
            fetch = partial(_raw_columns, cursor, read.batch_rows)
            for raw in read_ahead(fetch, name="mysql-fetch"):
                yield _to_batch(raw, finishes, read)
    finally:
        cursor.close()  # reads what an early stop left, so the connection stays usable


def _raw_columns(cursor: Any, batch_rows: int) -> list[pa.Array] | None:
    """The next rows as one binary array per column (None at the end)."""
    rows = cursor.fetchmany(batch_rows)
    return [pa.array(values, type=pa.binary()) for values in zip(*rows, strict=True)] if rows else None


def _to_batch(raw: list[pa.Array], finishes: list[Finish], read: FastRead) -> pa.RecordBatch:
    arrays = [
        finish(values, field, read.nulled)
        for values, finish, field in zip(raw, finishes, read.fields, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)
