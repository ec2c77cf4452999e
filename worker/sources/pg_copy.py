"""PostgreSQL's fast path: `COPY (<the generic SELECT, compiled by SQLAlchemy>) TO STDOUT`, parsed
by Arrow's streaming CSV reader (tab-separated, PostgreSQL's text format) with explicit column types.

The COPY runs on the snapshot's own DB-API connection, inside its REPEATABLE READ transaction, so it
sees exactly what COUNT(*) saw. The query is the generic path's: same table, same window conditions
(bound by psycopg2's own `mogrify`), same columns and read expressions; Arrow turns PostgreSQL's
text of each column into the generic path's exact value:

| target | Arrow reads PostgreSQL's text as |
|---|---|
| INT64, FLOAT64, BOOL, STRING family, exact decimal text | its type (parsed while splitting) |
| NUMERIC / BIGNUMERIC, DATE, DATETIME, TIMESTAMP (UTC session) | text, cast to the type (vectorised) |
| JSON (jsonb) | text, the space after separators removed (vectorised) |
| JSON (json) | text, then the generic JSON column builder (`fastjson.json_column`) |
| BYTES | text, then the generic converter per value |

A column with a converter is carried the way its converter declares (`Converter.pg_copy`, in the
type map); one without, as psycopg2's own value of its type (`_PLAIN`). This module never imports a
dialect (docs/sources.md).

A value the vectorised cast refuses (NaN, ±infinity, BC, a year past 9999: what psycopg2, so the
generic path, cannot hold) sends that block's column through the generic batch builder, fed with
the values psycopg2 would have returned for the same text, so NULLs are counted exactly alike. The
server writes only the generic SELECT: no extra expression costs it anything over a plain dump.

The text format, not CSV: PostgreSQL writes it faster (no quoting decisions) and Arrow splits it
without tracking quotes. Its only escapes are a backslash before b f n r t v and itself; a block's
column is unescaped (per value, in Python) only when its bytes hold a backslash at all.

Strict mode keeps the generic path (it stops at the first bad value, in the generic order). jsonb
documents whose numbers might not survive (long digit runs, numbers the generic path would spell
with an exponent) or that hold escapes go through the generic converter. Any other target (arrays,
TIME, a converter declaring no COPY form, timestamptz in a session not in UTC) keeps the whole table
on the generic path: `plan_copy` returns None.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from worker.columns import Column
from worker.sources.arrays import NulledValues, Unrepresentable, column_array
from worker.sources.converters import FromText, cast_from_text
from worker.sources.dialect import FastRead, Field
from worker.sources.fastjson import fast_json_text, maybe_too_deep
from worker.sources.fastpath import Rebatcher, compiled_select, from_text, inner_expr
from worker.sources.typemap import ReadMode

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 1 << 20  # Arrow parses a block at a time: bounds memory, amortises per-block cost
PIPE_BYTES = 1 << 20  # a larger pipe lets the COPY thread run ahead while a block is parsed
# jsonb prints `"key": value, item` and nothing else outside strings, so removing the space after
# every ", " and ": " is json.dumps(separators=(",", ":")) for any document whose strings hold
# neither. One regex pass finds the documents that go through the generic converter instead: a
# string token holding a separator, a number it might spell differently or refuse (a long digit
# run; a small number that str(Decimal) writes with an exponent), or any backslash (an escape).
SEPARATOR_IN_STRING = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*"(?:[^"\\]|\\.)*(?:, |: )'
_JSONB_GENERIC = (
    SEPARATOR_IN_STRING  # a separator inside a string
    + r"|[0-9.]{16,}|0\.000000"  # numbers
    r"|\\"  # escapes
)
# COPY's text format escapes (a backslash before the letter) and what they stand for.
_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True)
class _CopyColumn:
    field: Field
    csv_type: pa.DataType  # what Arrow's reader parses the text as
    form: FromText | None = None  # then from the text (unescaped), vectorised, as it declares
    per_value: Callable[[str], Any] | None = None  # the driver's value of each text (rare types)
    jsonb: bool = False  # the generic JSON converter's result, from jsonb's own canonical text


_Rule = Callable[[Field, sa.ColumnElement[Any]], "_CopyColumn | None"]


# --- planning --------------------------------------------------------------------------------------
def plan_copy(read: FastRead, utc_session: bool = True) -> list[_CopyColumn] | None:
    """The COPY columns, or None when any column's value cannot be proven identical this way."""
    if read.nulled.strict:
        return None  # strict mode stops at the first bad value, in the generic path's order
    planned = [_plan_column(field, utc_session) for field in read.fields]
    if any(column is None for column in planned):
        return None
    return [column for column in planned if column is not None]


def _plan_column(field: Field, utc_session: bool) -> _CopyColumn | None:
    target = field.target
    if target.repeated or (target.bq_type == "TIMESTAMP" and not utc_session):
        return None
    if target.convert is None:
        rule = _PLAIN.get((target.bq_type, target.read))
        return rule(field, inner_expr(field.expr)) if rule is not None else None
    form = target.convert.pg_copy
    if form is None:
        return None
    if form.form == "json" and _is_jsonb(inner_expr(field.expr)):
        return _CopyColumn(field, pa.string(), jsonb=True)
    return _CopyColumn(field, pa.string(), form)


def _is_jsonb(inner: sa.ColumnElement[Any]) -> bool:
    cast_from = inner.clause.type if isinstance(inner, sa.Cast) else inner.type
    return isinstance(cast_from, pg.JSONB)


def _parsed(csv_type: pa.DataType) -> _Rule:
    return lambda field, _inner: _CopyColumn(field, csv_type)


def _from_text(form: FromText) -> _Rule:
    return lambda field, _inner: _CopyColumn(field, pa.string(), form)


def _pg_date(text: str) -> Any:
    """What psycopg2's (lenient) date caster returns for PostgreSQL's text of a date."""
    try:
        return date.fromisoformat(text)  # 'infinity', BC, year 10000: not an ISO date
    except ValueError:
        return Unrepresentable(text)


def _pg_datetime(text: str) -> Any:
    """Same for timestamp and timestamptz ('2024-01-02 03:04:05.5', '...+00')."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return Unrepresentable(text)


def _bytes(field: Field, inner: sa.ColumnElement[Any]) -> _CopyColumn | None:
    if not isinstance(inner.type, pg.BYTEA):
        return None
    return _CopyColumn(field, pa.string(), per_value=_bytea)


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:])  # bytea_output 'hex' (checked before the COPY): \x00ff


# A column without a converter holds psycopg2's own value, which COPY's text gives back this way, by
# (BigQuery type, read mode); a converter declares its own form (`Converter.pg_copy`, in the type
# map). Anything else keeps the table on the generic path.
_PLAIN: dict[tuple[str, ReadMode], _Rule] = {
    ("INT64", "native"): _parsed(pa.int64()),
    ("FLOAT64", "raw"): _parsed(pa.float64()),
    ("BOOL", "native"): _parsed(pa.bool_()),
    ("STRING", "native"): _parsed(pa.string()),
    ("STRING", "raw"): _parsed(pa.string()),
    ("STRING", "text"): _parsed(pa.string()),
    ("DATE", "native"): _from_text(cast_from_text(_pg_date)),
    ("DATETIME", "native"): _from_text(cast_from_text(_pg_datetime)),
    ("TIMESTAMP", "native"): _from_text(cast_from_text(_pg_datetime)),  # in a UTC session only
    ("BYTES", "native"): _bytes,
}


# --- the statement ---------------------------------------------------------------------------------
def copy_statement(read: FastRead, columns: list[_CopyColumn]) -> str:
    """COPY (the generic SELECT) TO STDOUT, its parameters bound by psycopg2."""
    assert len(columns) == len(read.fields)  # plan_copy plans one COPY column per generic column
    return f"COPY ({bound_select(read)}) TO STDOUT"  # text format: tab-separated, \\N for NULL


def bound_select(read: FastRead) -> str:
    """The generic SELECT as text, its parameters bound by psycopg2 (what COPY runs)."""
    compiled = compiled_select(read)
    cursor = _dbapi(read.conn).cursor()
    try:
        return str(cursor.mogrify(str(compiled), compiled.params).decode("utf-8"))
    finally:
        cursor.close()


def _dbapi(conn: sa.Connection) -> Any:
    return conn.connection.dbapi_connection


@dataclass(frozen=True)
class _Session:
    supported: bool  # UTF-8, bytea as hex, ISO dates: what the parsing assumes
    utc: bool  # TimeZone is UTC: timestamptz text is read as is


def _session(conn: sa.Connection) -> _Session:
    dbapi = _dbapi(conn)
    cursor = dbapi.cursor()
    try:
        cursor.execute("SELECT current_setting('bytea_output'), current_setting('DateStyle'), "
                       "current_setting('TimeZone')")
        bytea_output, datestyle, zone = cursor.fetchone()
    finally:
        cursor.close()
    utf8 = getattr(dbapi, "encoding", "UTF8") in ("UTF8", "UNICODE")
    supported = utf8 and bytea_output == "hex" and str(datestyle).startswith("ISO")
    return _Session(supported, str(zone) in ("UTC", "Etc/UTC"))


# --- streaming -------------------------------------------------------------------------------------
def fast_batches(read: FastRead) -> Iterator[pa.RecordBatch] | None:
    """COPY's batches when every column can be carried exactly, else None (the generic path)."""
    columns = copy_columns(read)
    if columns is None:
        return None
    log.debug("reading %s with COPY", read.table.name)
    return copy_batches(read, columns)


def copy_columns(read: FastRead) -> list[_CopyColumn] | None:
    """How COPY carries each column in this session, or None when some column cannot be."""
    if plan_copy(read) is None:  # cheap: no query, most tables stop here or go on
        return None
    session = _session(read.conn)
    return plan_copy(read, session.utc) if session.supported else None


def copy_batches(read: FastRead, columns: list[_CopyColumn]) -> Iterator[pa.RecordBatch]:
    """The generic path's batches (exactly `batch_rows` rows, the last shorter), read by COPY."""
    statement = copy_statement(read, columns)
    rebatch = Rebatcher(read.batch_rows)
    with _CopyPipe(_dbapi(read.conn), statement) as pipe:
        if not pipe.reader.peek(1):  # no rows (or a failed COPY, raised on exit): Arrow refuses empty input
            return
        reader = pcsv.open_csv(pipe.reader, **_text_options(columns))
        for block in reader:
            yield from rebatch.push(_to_batch(block, columns, read))
    yield from rebatch.flush()


def _text_options(columns: list[_CopyColumn]) -> dict[str, Any]:
    names = [f"v{i}" for i in range(len(columns))]
    return {
        "read_options": pcsv.ReadOptions(column_names=names, block_size=CSV_BLOCK_BYTES, use_threads=True),
        # No quoting: a tab, newline or backslash in a value is escaped; an empty line is a row of
        # one empty string (one column), not nothing.
        "parse_options": pcsv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False),
        "convert_options": pcsv.ConvertOptions(
            column_types={name: c.csv_type for name, c in zip(names, columns, strict=True)},
            null_values=["\\N"], strings_can_be_null=True, true_values=["t"], false_values=["f"],
        ),
    }


def _to_batch(block: pa.RecordBatch, columns: list[_CopyColumn], read: FastRead) -> pa.RecordBatch:
    arrays = [_finish(block.column(i), column, read.nulled) for i, column in enumerate(columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)


def _finish(array: pa.Array, column: _CopyColumn, nulled: NulledValues) -> pa.Array:
    if column.jsonb:  # escapes are among what sends a document to the generic converter
        return _compact_jsonb(array, column.field.column, nulled)
    if pa.types.is_string(array.type):
        array = _unescaped(array)
    if column.per_value is not None:
        return column_array(array.to_pylist(), column.field.column, column.per_value, nulled)
    if column.form is not None:
        # A text the form refuses (NaN, ±infinity, BC, year 10000: what psycopg2, so the generic
        # path, cannot hold either) sends this block's column through the generic batch builder,
        # fed with what psycopg2 returns for each text, so it is NULLed and counted exactly alike.
        convert = column.field.target.convert
        return from_text(array, column.form, column.field.column,
                         None if convert is None else convert.per_value, nulled)
    return array


def _unescaped(array: pa.Array) -> pa.Array:
    data = array.buffers()[2]
    if data is None or b"\\" not in data.to_pybytes():  # one memchr over the block's bytes
        return array
    escaped = pc.fill_null(pc.match_substring(array, "\\"), False)
    texts = [unescape(text) for text in array.filter(escaped).to_pylist()]
    return pc.replace_with_mask(array, escaped, pa.array(texts, type=pa.string()))


def unescape(text: str) -> str:
    """A value of COPY's text format as it is stored."""
    return _ESCAPE.sub(lambda found: _UNESCAPES[found.group(1)], text)


def _compact_jsonb(array: pa.Array, column: Column, nulled: NulledValues) -> pa.Array:
    compact = pc.replace_substring(pc.replace_substring(array, ", ", ","), ": ", ":")
    risky = pc.or_(pc.fill_null(pc.match_substring_regex(array, pattern=_JSONB_GENERIC), False),
                   maybe_too_deep(array))
    if not pc.any(risky).as_py():
        return compact
    texts = [unescape(text) for text in array.filter(risky).to_pylist()]
    exact = [fast_json_text(text) for text in texts]
    for text, value in zip(texts, exact, strict=True):
        if value is None:
            nulled.record(column, text)
    return pc.replace_with_mask(compact, risky, pa.array(exact, type=pa.string()))


class _CopyPipe:
    """`cursor.copy_expert` pushes COPY's output into a file; Arrow's reader pulls from one. A pipe
    joins them: the COPY runs on a thread (psycopg2 releases the GIL while it waits for the server),
    and an error on either side ends the other (a closed read end breaks the writer's next write)."""

    def __init__(self, dbapi_conn: Any, statement: str) -> None:
        read_fd, write_fd = os.pipe()
        _grow_pipe(write_fd)
        self.reader: io.BufferedReader = os.fdopen(read_fd, "rb")
        self._writer: IO[bytes] = os.fdopen(write_fd, "wb", buffering=PIPE_BYTES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._copy, args=(dbapi_conn, statement), name="pg-copy", daemon=True
        )

    def __enter__(self) -> _CopyPipe:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.reader.close()  # unblocks the writer if the consumer stopped early
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error

    def _copy(self, dbapi_conn: Any, statement: str) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.copy_expert(statement, self._writer, size=PIPE_BYTES)
        except BaseException as error:  # re-raised in the consumer's thread
            self._error = error
        finally:
            cursor.close()
            with contextlib.suppress(OSError):  # the reader is gone: nothing to flush to
                self._writer.close()


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.fcntl(fd, 1031, PIPE_BYTES)  # F_SETPIPE_SZ (Linux): fewer wake-ups per MiB
