"""Speed for the generic batch builder, with values identical to it (docs/performance.md).

Profiles of the generic path showed where the time went: JSON re-serialisation in pure Python
(`_encode_exact` for any document holding a non-integer number), one Python call per value even
for columns with no converter, and the cyclic garbage collector walking millions of young row
tuples. Each helper here removes one of those costs and falls back to the generic code whenever
it cannot prove the result is the same.

`FastRead` is what a dialect's own reader (PostgreSQL COPY, `worker.sources.pg_copy`) receives.
"""

from __future__ import annotations

import gc
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from worker.columns import Column
from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import Converter, bigquery_json_number, json_text

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


# --- columns ---------------------------------------------------------------------------------------
def fast_column_array(
    values: list[Any] | tuple[Any, ...], column: Column, convert: Converter | None, nulled: NulledValues
) -> pa.Array:
    """`arrays.column_array`, same result: a column without a converter goes to Arrow in one C call
    (which refuses exactly the values column_array would NULL: Unrepresentable markers and values
    outside the type), and known slow converters are swapped for their fast twins."""
    if convert is None:
        try:
            return pa.array(values, type=column.arrow_type)
        except (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError):
            return column_array(values, column, None, nulled)
    return column_array(values, column, FAST_CONVERTERS.get(convert, convert), nulled)


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
