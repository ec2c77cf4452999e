"""Speed for the generic batch builder, with values identical to it (docs/performance.md).

Profiles of the generic path showed where the time went: JSON re-serialisation in pure Python
(`_encode_exact` for any document holding a non-integer number), one Python call per value even
for columns with no converter, and the cyclic garbage collector walking millions of young row
tuples. Each helper here removes one of those costs and falls back to the generic code whenever
it cannot prove the result is the same.

`FastRead` is what a dialect's own reader (PostgreSQL COPY, `worker.sources.pg_copy`) receives.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from worker.columns import Column
from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import (
    JSON_MAX_DEPTH,
    Converter,
    bigquery_json_number,
    bool_from_int,
    finite_decimal,
    json_text,
    too_deep,
)

# --- a dialect reader's input ----------------------------------------------------------------------


@dataclass(frozen=True)
class FastField:
    column: Column
    convert: Converter | None
    bq_type: str
    read: str
    repeated: bool
    expr: sa.ColumnElement[Any]  # what the generic SELECT reads (labelled with the column name)


@dataclass(frozen=True)
class FastRead:
    """Everything a dialect's reader needs to produce the generic path's batches another way."""

    conn: sa.Connection  # the snapshot's connection: same transaction, same snapshot
    table: sa.Table
    fields: tuple[FastField, ...]
    where: tuple[sa.ColumnElement[bool], ...]
    schema: pa.Schema
    batch_rows: int
    nulled: NulledValues


def inner_expr(expr: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A read expression without its label: the column, or the cast the generic SELECT reads."""
    return expr.element if isinstance(expr, sa.sql.elements.Label) else expr


def compiled_select(read: FastRead) -> SQLCompiler:
    """The generic path's SELECT (same columns, read expressions, window), compiled for the snapshot's
    dialect with every parameter still to bind: the fast readers run exactly this statement."""
    query = sa.select(*(f.expr for f in read.fields)).select_from(read.table).where(*read.where)
    compiled = query.compile(dialect=read.conn.dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    return compiled


# --- garbage collector -----------------------------------------------------------------------------
_gc_lock = threading.Lock()
_gc_state = {"pausers": 0, "was_enabled": True}


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while rows stream: every fetched row is a young tuple, so the GC runs a
    generation-0 scan every 700 allocations and, as survivors pile up, full scans of everything.
    Batches hold no reference cycles, so nothing is lost; counted, so concurrent runs nest."""
    with _gc_lock:
        if _gc_state["pausers"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["pausers"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["pausers"] -= 1
            if _gc_state["pausers"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


# --- JSON ------------------------------------------------------------------------------------------
# A character that JSON text from the source must not contain (else: the generic converter); it
# marks non-integer numbers so that C's json.dumps writes them verbatim.
_MARK = "\ue000"
# An integer of at most 18 digits is always an INT64; a longer digit run anywhere (even inside a
# string: the check is conservative) sends the document to the generic converter.
_LONG_DIGIT_RUN = re.compile(r"[0-9]{19}")


class _Unfit(Exception):
    """A number BigQuery JSON cannot hold: the generic converter decides (it returns None)."""


def _marked_number(text: str) -> str:
    number = Decimal(text)
    # Up to 15 digits without an exponent always survive FLOAT64; anything else gets the exact check.
    if (len(text) > 16 or "e" in text or "E" in text) and not bigquery_json_number(number):
        raise _Unfit(text)
    return _MARK + str(number) + _MARK


def fast_json_text(text: str | bytes) -> str | None:
    """`converters.json_text`, same output, without the pure-Python encoder for non-integers.

    json_text decodes with Decimal floats, checks every number fits BigQuery JSON, and re-encodes
    compactly, writing Decimals with str(). Here floats become marked strings, which the C encoder
    writes quoted; removing the quotes and marks leaves str(Decimal) exactly where json_text puts it.
    """
    if not isinstance(text, str) or _MARK in text or _LONG_DIGIT_RUN.search(text) or too_deep(text):
        return json_text(text)
    try:
        value = _DECODER.decode(text)
    except _Unfit:
        return None
    except ValueError:
        return json_text(text)  # whatever json_text makes of invalid JSON
    out = _ENCODER.encode(value)
    if _MARK in out:
        out = out.replace('"' + _MARK, "").replace(_MARK + '"', "")
    return out


# Built once: json.loads/dumps with arguments build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_float=_marked_number)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

FAST_CONVERTERS: dict[Any, Converter] = {json_text: fast_json_text}


# JSON that json_text gives back as the document itself once the space after each separator goes
# (jsonb's and MySQL's own spelling, `{"a": 1, "b": [2, 3]}`): a document that orjson parses, whose
# canonical form (orjson.dumps) is that compacted text, numbers aside. orjson's canonical form has no
# whitespace, one value per key (a repeated key is dropped, as json_text drops it), and the strings
# as written when they hold no escape; so equality, digits ignored, proves the document valid, its
# keys unique, no other whitespace, no separator inside a string. The numbers stay as written, which
# is how json_text writes them unless _RISKY_JSON says otherwise: more than 15 digits (the exact
# check), an exponent or a tiny number (str(Decimal) writes 1E+2, 1E-7), -0 (written 0). A backslash
# (an escape orjson might spell differently from json) or a control character goes to json_text too.
_RISKY_JSON = r"[0-9.]{16,}|0\.000000|-0[^.0-9]|-0$|[0-9.][eE]|[eE][+-]?[0-9]|\\|[\x00-\x1f]"
_NUMBER_CHARS = b"0123456789.eE+-"


def _json_texts(values: list[Any] | tuple[Any, ...], column: Column, nulled: NulledValues) -> pa.Array:
    """column_array(values, column, json_text, nulled), same result."""
    if not _kinds(values) <= {str}:
        return column_array(values, column, fast_json_text, nulled)
    return json_column(pa.array(values, type=pa.string()), column, nulled, values)


def json_column(texts: pa.Array, column: Column, nulled: NulledValues,
                values: list[Any] | tuple[Any, ...] | None = None) -> pa.Array:
    """json_text of each of these texts (NULL and counted when it says None): a document whose
    compacted text is provably json_text's output keeps it; the others go through fast_json_text."""
    if values is None:
        values = texts.to_pylist()
    compact = pc.replace_substring(pc.replace_substring(texts, ", ", ","), ": ", ":")
    exact = _compact_is_exact(values, texts, compact.to_pylist())
    others = [i for i, keep in enumerate(exact) if not keep and values[i] is not None]
    if not others:
        return compact
    converted: list[str | None] = []
    mask = [False] * len(values)
    for i in others:
        converted.append(fast_json_text(values[i]))
        if converted[-1] is None:
            nulled.record(column, values[i])
        mask[i] = True
    return pc.replace_with_mask(compact, pa.array(mask), pa.array(converted, type=pa.string()))


def _compact_is_exact(values: Sequence[str | None], texts: pa.Array, compact: list[str | None]) -> list[bool]:
    """Per document: is its compacted text what json_text returns? (False: json_text decides.)"""
    risky = pc.or_(pc.match_substring_regex(texts, pattern=_RISKY_JSON), maybe_too_deep(texts))
    plain: list[bool] = pc.fill_null(pc.invert(risky), False).to_pylist()
    if all(plain):  # the common case: no list to build
        return _canonical_mask(cast(list[str], values), cast(list[str], compact))
    chosen = [i for i, keep in enumerate(plain) if keep]
    if not chosen:
        return plain
    exact = _canonical_mask([cast(str, values[i]) for i in chosen], [cast(str, compact[i]) for i in chosen])
    for i, keep in zip(chosen, exact, strict=True):
        plain[i] = keep
    return plain


def maybe_too_deep(texts: pa.Array) -> pa.Array:
    """Documents that might nest deeper than BigQuery allows (json_text counts exactly): more
    openings than the limit; only a text longer than the limit can have that many."""
    long = pc.fill_null(pc.greater(pc.binary_length(texts), JSON_MAX_DEPTH), False)
    if not pc.any(long).as_py():
        return long
    openings = pc.add(pc.count_substring(texts, "["), pc.count_substring(texts, "{"))
    return pc.fill_null(pc.greater(openings, JSON_MAX_DEPTH), False)


# Documents are checked a block at a time: one JSON array holding them all, a sentinel string
# between each two, parsed and written back by orjson in one call each. The sentinel's escape
# cannot occur in a document (a backslash is risky), so it marks where each document starts and
# ends on both sides.
_SENTINEL = "\x00"
_SENTINEL_TEXT = ',"\\u0000",'
_SMALLEST_SPLIT = 8


def _canonical_mask(docs: list[str], compacted: list[str]) -> list[bool]:
    """Per document: does orjson parse it and write back its compacted text, digits aside? A block
    that fails is halved until the documents that fail are found one by one."""
    if _all_canonical(docs, compacted):
        return [True] * len(docs)
    if len(docs) == 1:
        return [False]
    if len(docs) <= _SMALLEST_SPLIT:
        return [_all_canonical([doc], [text]) for doc, text in zip(docs, compacted, strict=True)]
    half = len(docs) // 2
    return _canonical_mask(docs[:half], compacted[:half]) + _canonical_mask(docs[half:], compacted[half:])


def _all_canonical(docs: list[str], compacted: list[str]) -> bool:
    try:
        parsed = orjson.loads("[" + _SENTINEL_TEXT.join(docs) + "]")
    except orjson.JSONDecodeError:
        return False
    # Each document one value: the sentinels sit exactly between them (a document like `1,2` or
    # `[1` shifts them).
    if len(parsed) != 2 * len(docs) - 1 or parsed[1::2] != [_SENTINEL] * (len(docs) - 1):
        return False
    try:
        canonical = orjson.dumps(parsed)
    except orjson.JSONEncodeError:
        return False
    written = ("[" + _SENTINEL_TEXT.join(compacted) + "]").encode()
    return canonical.translate(None, _NUMBER_CHARS) == written.translate(None, _NUMBER_CHARS)


# --- columns ---------------------------------------------------------------------------------------
def fast_column_array(
    values: list[Any] | tuple[Any, ...], column: Column, convert: Converter | None, nulled: NulledValues
) -> pa.Array:
    """`arrays.column_array`, same result: a column without a converter goes to Arrow in one C call
    (which refuses exactly the values column_array would NULL: Unrepresentable markers and values
    outside the type), and known slow converters are swapped for their fast twins."""
    if convert is None:
        array = _arrow_or_none(values, column.arrow_type)
        return array if array is not None else column_array(values, column, None, nulled)
    if convert is json_text:
        return _json_texts(values, column, nulled)
    vectorised = _vectorised(convert)
    if vectorised is not None and (array := vectorised(values, column.arrow_type)) is not None:
        return array
    return column_array(values, column, FAST_CONVERTERS.get(convert, convert), nulled)


_ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError)


def _arrow_or_none(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    try:
        return pa.array(values, type=arrow_type)
    except _ARROW_ERRORS:
        return None


# --- converters as whole-column operations ---------------------------------------------------------
# A vectorised twin returns the converter's exact result for the whole column, or None when some
# value is not of the one simple kind it handles (then the generic converter runs per value).
Vectorised = Callable[[Sequence[Any], pa.DataType], "pa.Array | None"]
_NONE = type(None)
# Strict ISO text, where datetime.fromisoformat and Arrow's cast agree (year 0 is no date in Python).
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
ISO_DATE = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
ISO_DATETIME = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}[ T][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(?:\.[0-9]{{1,6}})?$"


def _kinds(values: Sequence[Any]) -> set[type[Any]]:
    kinds = set(map(type, values))  # one C-level pass
    kinds.discard(_NONE)
    return kinds


def _all_of(kind: type[Any], values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """SQLite's of_class(kind) / float_value: values of exactly that class pass unchanged."""
    return _arrow_or_none(values, arrow_type) if _kinds(values) <= {kind} else None


def _bools(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """bool_from_int: 0 and 1 are false and true (anything else is the converter's business)."""
    if not _kinds(values) <= {int}:
        return None
    ints = _arrow_or_none(values, pa.int64())
    return None if ints is None else bools_from_ints(ints)


def bools_from_ints(ints: pa.Array) -> pa.Array | None:
    """bool_from_int on a whole int64 column, or None when a value is neither 0 nor 1."""
    bounds = pc.min_max(ints).as_py()  # NULLs skipped; both None when there is no value
    if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] > 1):
        return None
    return pc.not_equal(ints, 0)


def _iso(pattern: str, values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """date/datetime.fromisoformat converters (SQLite's, MySQL's) on text in the one strict ISO form."""
    if not _kinds(values) <= {str}:
        return None
    return iso_cast(pa.array(values, type=pa.string()), pattern, arrow_type)


def iso_cast(texts: pa.Array, pattern: str, arrow_type: pa.DataType) -> pa.Array | None:
    """The fromisoformat converters on a whole string column, where every text has the one strict ISO
    form on which Arrow's cast agrees with them; a TIMESTAMP's text is its UTC wall clock (the
    converters attach UTC). None when a text does not fit or the cast refuses one (February 30):
    the converter makes it NULL and counts it."""
    if pc.all(pc.match_substring_regex(texts, pattern=pattern)).as_py() is False:
        return None
    try:
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
            return texts.cast(pa.timestamp(arrow_type.unit)).cast(arrow_type)
        return texts.cast(arrow_type)
    except _ARROW_ERRORS:
        return None


def _decimals(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """SQLite's NUMERIC(p, s) (decimal_value then finite_decimal) for stored REALs and INTEGERs:
    Decimal(repr(value)), cast from the same text; a value that needs rounding is left to it."""
    if not _kinds(values) <= {float, int}:
        return None
    texts = [None if value is None else repr(value) for value in values]
    try:
        return pa.array(texts, type=pa.string()).cast(arrow_type)
    except _ARROW_ERRORS:  # NaN, infinities, too many digits: NULL and counted, per value
        return None


@functools.lru_cache(maxsize=256)
def _vectorised(convert: Converter) -> Vectorised | None:
    from worker.sources import mysql, sqlite  # late: the dialect modules import this one

    if isinstance(convert, functools.partial) and len(convert.args) == 1:
        if convert.func is sqlite.of_class:
            return functools.partial(_all_of, convert.args[0])
        if convert.func is getattr(sqlite, "_then", None) and convert.args[0] is finite_decimal:
            return _decimals
    rules: dict[Any, Vectorised] = {
        finite_decimal: functools.partial(_all_of, Decimal),  # Arrow refuses NaN and ±Infinity
        mysql.date_from_text: functools.partial(_iso, ISO_DATE),
        mysql.naive_from_text: functools.partial(_iso, ISO_DATETIME),
        mysql.utc_from_text: functools.partial(_iso, ISO_DATETIME),
        sqlite.float_value: functools.partial(_all_of, float),
        bool_from_int: _bools,
        sqlite.datetime_from_text: functools.partial(_iso, ISO_DATETIME),
        sqlite.date_from_text: functools.partial(_iso, ISO_DATE),
    }
    return rules.get(convert)


# --- batches ---------------------------------------------------------------------------------------
class Rebatcher:
    """Cuts a stream of batches of any size into batches of exactly `rows` rows (the last shorter),
    so that a reader with its own block size yields what the generic path yields."""

    def __init__(self, rows: int) -> None:
        self._rows = rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def push(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self._rows:
            merged = pa.concat_batches(self._pending) if len(self._pending) > 1 else self._pending[0]
            yield merged.slice(0, self._rows)
            rest = merged.slice(self._rows)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def flush(self) -> Iterator[pa.RecordBatch]:
        if self._pending_rows:
            yield pa.concat_batches(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
