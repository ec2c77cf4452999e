"""Speed for the generic batch builder, and the kit the fast readers share, with values identical
to the generic path's (docs/performance.md).

Profiles of the generic path showed where the time went: one Python call per value even for columns
with no converter or with a converter that has a whole-column twin, JSON re-serialisation in pure
Python, and the cyclic garbage collector walking millions of young row tuples. Each helper here
removes one of those costs and falls back to the generic code whenever it cannot prove the result
is the same. Which form reproduces a converter is declared with the converter
(`worker.sources.converters.Converter`); nothing here knows a converter or a dialect by name.

The fast readers (`pg_copy`, `mysql_raw`) use `compiled_select` (the generic SELECT), `from_text`
(a converter's `FromText` form on a column of the database's text) and `Rebatcher`.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from worker.columns import Column
from worker.sources.arrays import NulledValues, ValueFn, column_array
from worker.sources.columnar import arrow_or_none, bools_from_ints, iso_cast
from worker.sources.converters import Converter, FromText, TextForm
from worker.sources.dialect import FastRead
from worker.sources.fastjson import json_column


# --- the generic SELECT ----------------------------------------------------------------------------
def inner_expr(expr: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A read expression without its label: the column, or the cast the generic SELECT reads."""
    return expr.element if isinstance(expr, sa.sql.elements.Label) else expr


def compiled_select(read: FastRead, values: Sequence[sa.ColumnElement[Any]] | None = None) -> SQLCompiler:
    """The generic path's SELECT (same columns, read expressions, window), compiled for the snapshot's
    dialect with every parameter still to bind: pg_copy runs exactly this statement; `values`, the
    same table and window with other values selected (mysql_raw's own forms of the same values)."""
    selected = values if values is not None else [f.expr for f in read.fields]
    query = sa.select(*selected).select_from(read.table).where(*read.where)
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


# --- columns ---------------------------------------------------------------------------------------
def fast_column_array(
    values: Sequence[Any], column: Column, convert: Converter | None, nulled: NulledValues
) -> pa.Array:
    """`arrays.column_array`, same result: a column without a converter goes to Arrow in one C call
    (which refuses exactly the values column_array would NULL: Unrepresentable markers and values
    outside the type), and a converter's declared whole-column twin runs when it has one."""
    if convert is None:
        array = arrow_or_none(values, column.arrow_type)
        return array if array is not None else column_array(values, column, None, nulled)
    if convert.columnar is not None and (array := convert.columnar(values, column, nulled)) is not None:
        return array
    return column_array(values, column, convert.per_value, nulled)


# --- a column of the database's text (COPY, MySQL's text protocol) ---------------------------------
def from_text(texts: pa.Array, form: FromText, column: Column, convert: ValueFn | None,
              nulled: NulledValues) -> pa.Array:
    """The generic path's array for a column the database sent as text: `form` vectorised, or, when
    it refuses a text, the column per value (`form.driver` of each text, then `convert`)."""
    array = _VECTORISED[form.form](texts, form, column, nulled)
    if array is not None:
        return array
    driver_values = [None if text is None else form.driver(text) for text in texts.to_pylist()]
    return column_array(driver_values, column, convert, nulled)


_FROM_TEXT_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError)


def _cast(texts: pa.Array, _form: FromText, column: Column, _nulled: NulledValues) -> pa.Array | None:
    try:
        return texts.cast(column.arrow_type)
    except _FROM_TEXT_ERRORS:
        return None


def _bools(texts: pa.Array, _form: FromText, _column: Column, _nulled: NulledValues) -> pa.Array | None:
    try:
        return bools_from_ints(texts.cast(pa.int64()))
    except _FROM_TEXT_ERRORS:
        return None


_VECTORISED: dict[TextForm, Callable[[pa.Array, FromText, Column, NulledValues], pa.Array | None]] = {
    "itself": lambda texts, _form, _column, _nulled: texts,
    "cast": _cast,
    "iso": lambda texts, form, column, _nulled: iso_cast(texts, form.pattern, column.arrow_type),
    "bools": _bools,
    "json": lambda texts, _form, column, nulled: json_column(texts, column, nulled),
}


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

