"""PostgreSQL's fast path: `COPY (<the generic SELECT, compiled by SQLAlchemy>) TO STDOUT` as CSV,
parsed by Arrow's streaming CSV reader with explicit column types.

The COPY runs on the snapshot's own DB-API connection, inside its REPEATABLE READ transaction, so it
sees exactly what COUNT(*) saw. The query is the generic path's: same table, same window conditions
(bound by psycopg2's own `mogrify`), same column order; only a few columns are read through a
PostgreSQL expression whose text Arrow parses to the generic path's exact value:

| target | COPY reads | Arrow |
|---|---|---|
| INT64, FLOAT64, BOOL, STRING family, exact decimal text | the generic expression | parsed as is |
| NUMERIC / BIGNUMERIC | NULL for NaN (text of NaN in a flag column) | decimal128 / decimal256 |
| DATE, DATETIME, TIMESTAMP | NULL outside years 1..9999 (text in a flag column) | days / text / epoch µs |
| JSON (jsonb) | the jsonb text | the space after separators removed (vectorised) |
| JSON (json), BYTES | the text | the generic converter, per value |

A flag column carries the source text of a value BigQuery cannot hold, so it is counted (and
refused in strict mode) exactly as the generic path does. jsonb documents whose numbers might not
survive (long digit runs, numbers the generic path would spell with an exponent) go through the
generic converter. Any other target (arrays, TIME, types added later) keeps the whole table on the
generic path: `plan_copy` returns None.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from worker.columns import Column
from worker.sources.arrays import NulledValues
from worker.sources.converters import Unrepresentable, decimal_text, finite_decimal, json_text
from worker.sources.fastpath import FastField, FastRead, Rebatcher, fast_column_array, fast_json_text

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 1 << 20  # Arrow parses a block at a time: bounds memory, amortises per-block cost
PIPE_BYTES = 1 << 20  # a larger pipe lets the COPY thread run ahead while a block is parsed
# jsonb prints `"key": value, item` and nothing else outside strings, so removing the space after
# every ", " and ": " is json.dumps(separators=(",", ":")) for any document whose strings hold
# neither. Documents where they might (a string token containing one), and documents whose numbers
# the generic converter might spell differently or refuse (a long digit run; a small number that
# str(Decimal) writes with an exponent), go through the generic converter instead.
_SEPARATOR_IN_STRING = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*"(?:[^"\\]|\\.)*(?:, |: )'
_RISKY_NUMBER = r"[0-9.]{16,}|0\.000000"

Finish = Callable[[pa.Array], pa.Array]


@dataclass(frozen=True)
class _CopyColumn:
    field: FastField
    value: sa.ColumnElement[Any]  # what COPY reads for the value
    csv_type: pa.DataType
    finish: Finish | None = None  # vectorised: the CSV array → the column's Arrow type
    flag: sa.ColumnElement[Any] | None = None  # source text of values BigQuery cannot hold
    flagged: Callable[[str], Any] = Unrepresentable  # what the generic path records for one
    per_value: Callable[[Any], Any] | None = None  # the generic converter, per value (rare types)
    jsonb: bool = False


# --- planning --------------------------------------------------------------------------------------
def plan_copy(read: FastRead) -> list[_CopyColumn] | None:
    """The COPY columns, or None when any column's value cannot be proven identical this way."""
    if read.nulled.strict:
        return None  # strict mode stops at the first bad value, in the generic path's order
    planned = [_plan_column(field) for field in read.fields]
    if any(column is None for column in planned):
        return None
    return [column for column in planned if column is not None]


def _plan_column(field: FastField) -> _CopyColumn | None:
    if field.repeated:
        return None
    inner = _inner(field.expr)
    rule = _RULES.get((field.bq_type, field.read, field.convert))
    return rule(field, inner) if rule is not None else None


def _inner(expr: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return expr.element if isinstance(expr, sa.sql.elements.Label) else expr


def _as_is(csv_type: pa.DataType) -> Callable[[FastField, sa.ColumnElement[Any]], _CopyColumn]:
    return lambda field, inner: _CopyColumn(field, inner, csv_type)


def _uuid_text(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn | None:
    # str(uuid.UUID) is PostgreSQL's own spelling (lower case, hyphens); other objects: generic.
    return _CopyColumn(field, inner, pa.string()) if isinstance(inner.type, sa.Uuid) else None


def _decimal(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn:
    is_nan = inner == sa.literal("NaN", type_=inner.type)
    arrow_type = field.column.arrow_type
    # Arrow's CSV reader parses decimal128 but not decimal256: that one is cast from the text.
    wide = pa.types.is_decimal256(arrow_type)
    return _CopyColumn(
        field, sa.case((is_nan, sa.null()), else_=inner), pa.string() if wide else arrow_type,
        finish=_cast(arrow_type) if wide else None,
        flag=sa.case((is_nan, sa.cast(inner, sa.Text))), flagged=Decimal,
    )


def _in_years(inner: sa.ColumnElement[Any], low: str, high: str) -> sa.ColumnElement[bool]:
    # psycopg2 (so the generic path) cannot hold ±infinity, BC or years past 9999: those are flagged.
    return sa.and_(
        inner >= sa.cast(sa.literal(low), inner.type), inner < sa.cast(sa.literal(high), inner.type)
    )


def _guarded(inner: sa.ColumnElement[Any], fits: sa.ColumnElement[bool], value: sa.ColumnElement[Any],
             ) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    flag = sa.case((sa.and_(inner.is_not(None), sa.not_(fits)), sa.cast(inner, sa.Text)))
    return sa.case((fits, value)), flag


def _date(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn:
    days = inner - sa.cast(sa.literal("1970-01-01"), sa.Date)  # date - date: integer days
    value, flag = _guarded(inner, _in_years(inner, "0001-01-01", "10000-01-01"), days)
    return _CopyColumn(field, value, pa.int32(), finish=_cast(pa.date32()), flag=flag)


def _datetime(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn:
    value, flag = _guarded(inner, _in_years(inner, "0001-01-01", "10000-01-01"), inner)
    return _CopyColumn(field, value, pa.timestamp("us"), flag=flag)


def _timestamp(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn:
    # Bounds in the session's zone, as psycopg2 reads the text; the value as epoch microseconds, exact
    # whatever that zone is (PostgreSQL's extract(epoch) is numeric since version 14).
    micros = sa.cast(sa.extract("epoch", inner) * 1_000_000, sa.BigInteger)
    value, flag = _guarded(inner, _in_years(inner, "0001-01-01 00:00:00", "10000-01-01 00:00:00"), micros)
    return _CopyColumn(field, value, pa.int64(), finish=_cast(pa.timestamp("us", tz="UTC")), flag=flag)


def _json(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn:
    cast_from = inner.clause.type if isinstance(inner, sa.Cast) else inner.type
    if isinstance(cast_from, pg.JSONB):
        return _CopyColumn(field, inner, pa.string(), jsonb=True)
    return _CopyColumn(field, inner, pa.string(), per_value=fast_json_text)  # json keeps its own text


def _bytes(field: FastField, inner: sa.ColumnElement[Any]) -> _CopyColumn | None:
    if not isinstance(inner.type, pg.BYTEA):
        return None
    return _CopyColumn(field, inner, pa.string(), per_value=_bytea)


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:])  # bytea_output 'hex' (checked before the COPY): \x00ff


def _cast(arrow_type: pa.DataType) -> Finish:
    return lambda array: array.cast(arrow_type)


# (BigQuery type, read mode, converter) → how COPY carries it. Keyed by what the generic path does
# rather than by Target objects, so a changed conversion falls back instead of diverging.
_Rule = Callable[[FastField, sa.ColumnElement[Any]], "_CopyColumn | None"]
_RULES: dict[tuple[str, str, Any], _Rule] = {
    ("INT64", "native", None): _as_is(pa.int64()),
    ("FLOAT64", "raw", None): _as_is(pa.float64()),
    ("BOOL", "native", None): _as_is(pa.bool_()),
    ("STRING", "native", None): _as_is(pa.string()),
    ("STRING", "raw", None): _as_is(pa.string()),
    ("STRING", "text", None): _as_is(pa.string()),
    ("STRING", "native", decimal_text): _as_is(pa.string()),  # numeric_out never uses exponents
    ("STRING", "native", str): _uuid_text,
    ("NUMERIC", "native", finite_decimal): _decimal,
    ("BIGNUMERIC", "native", finite_decimal): _decimal,
    ("NUMERIC", "numeric", finite_decimal): _decimal,  # money, cast to numeric
    ("DATE", "native", None): _date,
    ("DATETIME", "native", None): _datetime,
    ("TIMESTAMP", "native", None): _timestamp,
    ("JSON", "text", json_text): _json,
    ("BYTES", "native", None): _bytes,
}


# --- the statement ---------------------------------------------------------------------------------
def copy_statement(read: FastRead, columns: list[_CopyColumn]) -> str:
    """COPY (SELECT <values>, <flags> FROM table WHERE <window>) TO STDOUT, parameters bound."""
    selected = [column.value.label(f"v{i}") for i, column in enumerate(columns)]
    selected += [column.flag.label(f"f{i}") for i, column in enumerate(columns) if column.flag is not None]
    query = sa.select(*selected).select_from(read.table).where(*read.where)
    compiled = query.compile(dialect=read.conn.dialect, compile_kwargs={"render_postcompile": True})
    cursor = _dbapi(read.conn).cursor()
    try:
        bound = cursor.mogrify(str(compiled), compiled.params).decode("utf-8")
    finally:
        cursor.close()
    return f"COPY ({bound}) TO STDOUT WITH (FORMAT csv)"


def _dbapi(conn: sa.Connection) -> Any:
    return conn.connection.dbapi_connection


def session_supports_copy(conn: sa.Connection) -> bool:
    """CSV is parsed as UTF-8 and bytea as hex: a session configured otherwise stays generic."""
    dbapi = _dbapi(conn)
    if getattr(dbapi, "encoding", "UTF8") not in ("UTF8", "UNICODE"):
        return False
    cursor = dbapi.cursor()
    try:
        cursor.execute("SELECT current_setting('bytea_output'), current_setting('DateStyle')")
        bytea_output, datestyle = cursor.fetchone()
    finally:
        cursor.close()
    return bool(bytea_output == "hex" and str(datestyle).startswith("ISO"))


# --- streaming -------------------------------------------------------------------------------------
def fast_batches(read: FastRead) -> Iterator[pa.RecordBatch] | None:
    """COPY's batches when every column can be carried exactly, else None (the generic path)."""
    columns = plan_copy(read)
    if columns is None or not session_supports_copy(read.conn):
        return None
    log.debug("reading %s with COPY", read.table.name)
    return copy_batches(read, columns)


def copy_batches(read: FastRead, columns: list[_CopyColumn]) -> Iterator[pa.RecordBatch]:
    """The generic path's batches (exactly `batch_rows` rows, the last shorter), read by COPY."""
    statement = copy_statement(read, columns)
    rebatch = Rebatcher(read.batch_rows)
    with _CopyPipe(_dbapi(read.conn), statement) as pipe:
        if not pipe.reader.peek(1):  # no rows (or a failed COPY, raised on exit): Arrow refuses empty CSV
            return
        reader = pcsv.open_csv(pipe.reader, **_csv_options(columns))
        for block in reader:
            yield from rebatch.push(_to_batch(block, columns, read))
    yield from rebatch.flush()


def _csv_options(columns: list[_CopyColumn]) -> dict[str, Any]:
    names = [f"v{i}" for i in range(len(columns))]
    types = {f"v{i}": column.csv_type for i, column in enumerate(columns)}
    for i, column in enumerate(columns):
        if column.flag is not None:
            names.append(f"f{i}")
            types[f"f{i}"] = pa.string()
    return {
        "read_options": pcsv.ReadOptions(column_names=names, block_size=CSV_BLOCK_BYTES, use_threads=True),
        "parse_options": pcsv.ParseOptions(newlines_in_values=True),
        # COPY CSV writes NULL as an empty unquoted field and '' as "": only the former is NULL.
        "convert_options": pcsv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"],
        ),
    }


def _to_batch(block: pa.RecordBatch, columns: list[_CopyColumn], read: FastRead) -> pa.RecordBatch:
    arrays = []
    for i, column in enumerate(columns):
        if column.flag is not None:
            _record_flags(block.column(f"f{i}"), column, read.nulled)
        arrays.append(_finish(block.column(f"v{i}"), column, read.nulled))
    return pa.RecordBatch.from_arrays(arrays, schema=read.schema)


def _finish(array: pa.Array, column: _CopyColumn, nulled: NulledValues) -> pa.Array:
    if column.jsonb:
        return _compact_jsonb(array, column.field.column, nulled)
    if column.per_value is not None:
        convert = column.per_value
        return fast_column_array(array.to_pylist(), column.field.column, convert, nulled)
    return column.finish(array) if column.finish is not None else array


def _record_flags(flags: pa.Array, column: _CopyColumn, nulled: NulledValues) -> None:
    if flags.null_count == len(flags):
        return
    for text in flags.drop_null().to_pylist():
        nulled.record(column.field.column, column.flagged(text))


def _compact_jsonb(array: pa.Array, column: Column, nulled: NulledValues) -> pa.Array:
    compact = pc.replace_substring(pc.replace_substring(array, ", ", ","), ": ", ":")
    risky = pc.or_(pc.match_substring_regex(array, pattern=_SEPARATOR_IN_STRING),
                   pc.match_substring_regex(array, pattern=_RISKY_NUMBER))
    risky = pc.fill_null(risky, False)
    if not pc.any(risky).as_py():
        return compact
    texts = array.filter(risky).to_pylist()
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
