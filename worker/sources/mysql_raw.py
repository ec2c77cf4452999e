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
| JSON | `fastpath.json_column`: the generic JSON converter's result, proven in bulk per batch |

A batch whose column holds a value the cast refuses (a zero date, a TINYINT(1) holding 2, what the
driver could not hold either) converts that column per value, from what mysqlclient would have
returned for the same text, with the generic converter: NULLs are counted exactly alike. Any other
column (BIT, TIME, types added later) and strict mode keep the whole table on the generic path:
`plan_raw` returns None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import pyarrow as pa
from sqlalchemy.dialects import mysql

from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import bool_from_int, finite_decimal, json_text
from worker.sources.fastpath import (
    ISO_DATE,
    ISO_DATETIME,
    FastField,
    FastRead,
    bools_from_ints,
    compiled_select,
    gc_paused,
    inner_expr,
    iso_cast,
    json_column,
)
from worker.sources.read_ahead import read_ahead

log = logging.getLogger(__name__)

# A column turns a batch's raw values (binary) into the generic path's array.
Finish = Callable[[pa.Array, FastField, NulledValues], pa.Array]


# --- conversions -----------------------------------------------------------------------------------
def _text(raw: pa.Array) -> pa.Array:
    return raw.cast(pa.string())  # validates UTF-8 as mysqlclient's decoding would


def _per_value(
    raw: pa.Array, field: FastField, nulled: NulledValues, driver: Callable[[str], Any]
) -> pa.Array:
    """The generic path for one batch's column: mysqlclient's value of each text, then the converter."""
    values = [None if text is None else driver(text) for text in _text(raw).to_pylist()]
    return column_array(values, field.column, field.convert, nulled)


def _binary(raw: pa.Array, _field: FastField, _nulled: NulledValues) -> pa.Array:
    return raw


def _string(raw: pa.Array, _field: FastField, _nulled: NulledValues) -> pa.Array:
    return _text(raw)


def _cast(driver: Callable[[str], Any]) -> Finish:
    def finish(raw: pa.Array, field: FastField, nulled: NulledValues) -> pa.Array:
        try:
            return _text(raw).cast(field.column.arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _per_value(raw, field, nulled, driver)

    return finish


def _iso(pattern: str) -> Finish:
    """date_from_text / naive_from_text / utc_from_text: anything but strict ISO text goes per value."""
    def finish(raw: pa.Array, field: FastField, nulled: NulledValues) -> pa.Array:
        array = iso_cast(_text(raw), pattern, field.column.arrow_type)
        return array if array is not None else _per_value(raw, field, nulled, str)

    return finish


def _bool(raw: pa.Array, field: FastField, nulled: NulledValues) -> pa.Array:
    """bool_from_int: 0 and 1 are false and true; any other value goes per value (NULL, counted)."""
    try:
        array = bools_from_ints(_text(raw).cast(pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        array = None
    return array if array is not None else _per_value(raw, field, nulled, int)


def _json(raw: pa.Array, field: FastField, nulled: NulledValues) -> pa.Array:
    return json_column(_text(raw), field.column, nulled)


# --- planning --------------------------------------------------------------------------------------
def _integer(field: FastField) -> Finish | None:
    # BIT arrives as raw bytes (SQLAlchemy turns them into an int): not text, so generic.
    return None if isinstance(_inner_type(field), mysql.BIT) else _cast(int)


# (BigQuery type, read mode, converter) → how the raw bytes are finished. Keyed by what the generic
# path does rather than by SQL type, so a changed conversion falls back instead of diverging.
_RULES: dict[tuple[str, str, Any], Callable[[FastField], Finish | None]] = {
    ("INT64", "native", None): _integer,
    ("NUMERIC", "native", None): lambda _f: _cast(int),  # BIGINT UNSIGNED
    ("NUMERIC", "native", finite_decimal): lambda _f: _cast(Decimal),
    ("BIGNUMERIC", "native", finite_decimal): lambda _f: _cast(Decimal),
    ("FLOAT64", "raw", None): lambda _f: _cast(float),
    ("BOOL", "native", bool_from_int): lambda _f: _bool,
    ("STRING", "native", None): lambda _f: _string,
    ("STRING", "raw", None): lambda _f: _string,  # ENUM, SET: the driver's text
    ("STRING", "text", None): lambda _f: _string,
    ("BYTES", "native", None): lambda _f: _binary,
    ("JSON", "text", json_text): lambda _f: _json,
}
_ISO_RULES: dict[str, str] = {"DATE": ISO_DATE, "DATETIME": ISO_DATETIME, "TIMESTAMP": ISO_DATETIME}


def _inner_type(field: FastField) -> Any:
    return inner_expr(field.expr).type


def _plan_column(field: FastField) -> Finish | None:
    if field.repeated:
        return None
    if field.read == "text" and field.bq_type in _ISO_RULES and _is_text_converter(field):
        return _iso(_ISO_RULES[field.bq_type])
    rule = _RULES.get((field.bq_type, field.read, field.convert))
    return rule(field) if rule is not None else None


def _is_text_converter(field: FastField) -> bool:
    from worker.sources import mysql as dialect  # late: the dialect module imports this one

    return field.convert in (dialect.date_from_text, dialect.naive_from_text, dialect.utc_from_text)


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
            # The next rows are fetched (the driver builds them, holding the GIL only for that)
            # while Arrow converts these (mostly without it).
            for rows in read_ahead(partial(cursor.fetchmany, read.batch_rows), name="mysql-fetch"):
                yield _to_batch(rows, finishes, read)
    finally:
        cursor.close()  # reads what an early stop left, so the connection stays usable


def _to_batch(rows: Any, finishes: list[Finish], read: FastRead) -> pa.RecordBatch:
    arrays = [
        finish(pa.array(values, type=pa.binary()), field, read.nulled)
        for values, finish, field in zip(zip(*rows, strict=True), finishes, read.fields, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)
