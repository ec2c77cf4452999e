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
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from worker.columns import Column
from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import (
    Converter,
    bigquery_json_number,
    bool_from_int,
    finite_decimal,
    json_text,
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
    if not isinstance(text, str) or _MARK in text or _LONG_DIGIT_RUN.search(text):
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


# JSON that json_text would give back unchanged, provided it parses and repeats no key: structural
# characters, strings without escapes or control characters, true/false/null, and numbers without
# exponent. The spaced form (jsonb's and MySQL's own output, `{"a": 1, "b": [2, 3]}`) is the same
# once the space after each separator goes, unless a string holds a separator. _RISKY_JSON: what
# might still be spelled differently or refused (more than 15 digits, a small number str(Decimal)
# writes with an exponent, -0 which json writes as 0).
_JSON_VALUES = r'"[^"\\\x00-\x1f]*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?|true|false|null'
_COMPACT_JSON = rf"^(?:[{{}}\[\],:]|{_JSON_VALUES})+$"
_SPACED_JSON = rf"^(?:[{{}}\[\]]|, |: |{_JSON_VALUES})+$"
SEPARATOR_IN_STRING = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*"(?:[^"\\]|\\.)*(?:, |: )'
_RISKY_JSON = r"[0-9.]{16,}|0\.000000|-0[^.0-9]|-0$"


class _Repeated(Exception):
    """An object repeats a key: json_text keeps the last value, so the text changes."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        raise _Repeated
    return made


# JSONDecoder sets scan_once in __init__ (the C scanner); typeshed does not declare it.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(object_pairs_hook=_unique_keys).scan_once  # type: ignore[attr-defined]


def _json_texts(values: list[Any] | tuple[Any, ...], column: Column, nulled: NulledValues) -> pa.Array:
    """column_array(values, column, json_text, nulled), same result: documents already in json_text's
    compact form are kept after one C parse proves them valid with no repeated key; the others
    go through fast_json_text (NULL and counted when it says None)."""
    if not _kinds(values) <= {str}:
        return column_array(values, column, fast_json_text, nulled)
    out: list[str | None] = []
    for text, candidate in zip(values, _json_candidates(pa.array(values, type=pa.string())), strict=True):
        if text is None or (candidate is not None and _parses_uniquely(candidate)):
            out.append(candidate)
            continue
        converted = fast_json_text(text)
        if converted is None:
            nulled.record(column, text)
        out.append(converted)
    return pa.array(out, type=pa.string())


def _json_candidates(texts: pa.Array) -> list[str | None]:
    """Per document, the compact text json_text gives if the document parses with no repeated key;
    None where only json_text can tell."""
    def matches(pattern: str) -> pa.Array:
        return pc.fill_null(pc.match_substring_regex(texts, pattern=pattern), False)

    safe = pc.invert(matches(_RISKY_JSON))
    compact = pc.and_(matches(_COMPACT_JSON), safe)
    spaced = pc.and_(pc.and_(matches(_SPACED_JSON), pc.invert(matches(SEPARATOR_IN_STRING))), safe)
    unspaced = pc.replace_substring(pc.replace_substring(texts, ", ", ","), ": ", ":")
    nothing = pa.nulls(len(texts), type=pa.string())
    return pc.if_else(compact, texts, pc.if_else(spaced, unspaced, nothing)).to_pylist()  # type: ignore[no-any-return]


def _parses_uniquely(text: str) -> bool:
    try:  # the C scanner itself: decode() adds two whitespace regex calls per document
        _value, end = _SCAN(text, 0)
    except (StopIteration, ValueError, _Repeated):
        return False
    return bool(end == len(text))


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
_ISO_DATE = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
_ISO_DATETIME = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}[ T][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(?:\.[0-9]{{1,6}})?$"


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
    if ints is None:
        return None
    bounds = pc.min_max(ints).as_py()  # NULLs skipped; both None when there is no value
    if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] > 1):
        return None
    return pc.not_equal(ints, 0)


def _iso(pattern: str, values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """date/datetime.fromisoformat converters (SQLite's, MySQL's) on text in the one strict ISO
    form; a TIMESTAMP's text is its UTC wall clock (the converters attach UTC)."""
    if not _kinds(values) <= {str}:
        return None
    texts = pa.array(values, type=pa.string())
    if pc.all(pc.match_substring_regex(texts, pattern=pattern)).as_py() is False:
        return None
    try:
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
            return texts.cast(pa.timestamp(arrow_type.unit)).cast(arrow_type)
        return texts.cast(arrow_type)
    except _ARROW_ERRORS:  # e.g. February 30: the converter makes it NULL and counts it
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
        mysql.date_from_text: functools.partial(_iso, _ISO_DATE),
        mysql.naive_from_text: functools.partial(_iso, _ISO_DATETIME),
        mysql.utc_from_text: functools.partial(_iso, _ISO_DATETIME),
        sqlite.float_value: functools.partial(_all_of, float),
        bool_from_int: _bools,
        sqlite.datetime_from_text: functools.partial(_iso, _ISO_DATETIME),
        sqlite.date_from_text: functools.partial(_iso, _ISO_DATE),
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
