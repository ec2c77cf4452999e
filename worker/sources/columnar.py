"""Converters on a whole column at once: the vectorised twins that converters declare.

A twin returns exactly what its converter gives value by value, for the whole column, or None when
some value is not of the one simple kind it handles (then the converter runs per value). Twins
over driver values serve the generic path (`Converter.columnar`); `iso_cast` and `bools_from_ints`
also serve the readers that receive the database's text (`FromText`).

Pure Arrow: this module knows no reader and no dialect (docs/sources.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from worker.columns import Column
from worker.sources.arrays import NulledValues

# A twin: the column's driver values (NULLs included) → the converter's exact array, or None.
Columnar = Callable[[Sequence[Any], Column, NulledValues], "pa.Array | None"]

ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError)
_NONE = type(None)
# Strict ISO text, where datetime.fromisoformat and Arrow's cast agree (year 0 is no date in Python).
_YEAR = r"(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
ISO_DATE = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
ISO_DATETIME = rf"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}[ T][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}(?:\.[0-9]{{1,6}})?$"


# The same strict forms as fixed layouts, by text length (d: a digit, S: the space or T between date
# and time): a column whose texts all have one length (MySQL pads a DATETIME's fraction to the
# column's precision) is checked position by position in numpy, which is what the regex decides for
# texts of that length, at a third of its cost (RE2's per-text call dominates on such short texts).
_DATE_LAYOUT = "dddd-dd-dd"
_DATETIME_LAYOUT = "dddd-dd-ddSdd:dd:dd"
_LAYOUTS = {
    ISO_DATE: {10: _DATE_LAYOUT},
    ISO_DATETIME: {19: _DATETIME_LAYOUT} | {20 + n: _DATETIME_LAYOUT + "." + "d" * n for n in range(1, 7)},
}


def _fixed_width_iso(texts: pa.Array, pattern: str) -> bool | None:
    """Whether every text matches `pattern`, told by its fixed layout; None: the regex decides (NULLs,
    texts of several lengths, a length no layout has, no text)."""
    layouts = _LAYOUTS.get(pattern)
    if layouts is None or texts.null_count or not len(texts) or texts.type != pa.string():
        return None
    bounds = pc.min_max(pc.binary_length(texts)).as_py()
    layout = layouts.get(bounds["min"]) if bounds["min"] == bounds["max"] else None
    if layout is None:
        return None
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32, count=len(texts) + 1, offset=4 * texts.offset)
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)
    rows = data[offsets[0]:offsets[0] + len(texts) * len(layout)].reshape(len(texts), len(layout))
    return _fits_layout(rows, layout)


def _fits_layout(rows: npt.NDArray[np.uint8], layout: str) -> bool:
    digits = [i for i, c in enumerate(layout) if c == "d"]
    if not bool(((rows[:, digits] - ord("0")) <= 9).all()):  # uint8: below "0" wraps above 9
        return False
    for i, mark in enumerate(layout):
        if mark == "S":
            if not bool(((rows[:, i] == ord(" ")) | (rows[:, i] == ord("T"))).all()):
                return False
        elif mark != "d" and not bool((rows[:, i] == ord(mark)).all()):
            return False
    return bool((rows[:, :4] != ord("0")).any(axis=1).all())  # year 0 is no date in Python


def arrow_or_none(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """The values as one Arrow array in one C call, or None when Arrow refuses one of them."""
    try:
        return pa.array(values, type=arrow_type)
    except ARROW_ERRORS:
        return None


def kinds(values: Sequence[Any]) -> set[type[Any]]:
    """The classes of the non-NULL values, in one C-level pass."""
    found = set(map(type, values))
    found.discard(_NONE)
    return found


# --- twins over driver values (the generic path) ---------------------------------------------------
def all_of(kind: type[Any]) -> Columnar:
    """A converter that keeps values of exactly class `kind` unchanged (SQLite's of_class(kind),
    float_value; finite_decimal, whose NaN and ±Infinity Arrow refuses): Arrow takes them as they are."""
    return partial(_all_of, kind)


def _all_of(kind: type[Any], values: Sequence[Any], column: Column, _nulled: NulledValues) -> pa.Array | None:
    return arrow_or_none(values, column.arrow_type) if kinds(values) <= {kind} else None


def bools(values: Sequence[Any], _column: Column, _nulled: NulledValues) -> pa.Array | None:
    """bool_from_int: 0 and 1 are false and true (anything else is the converter's business)."""
    if not kinds(values) <= {int}:
        return None
    ints = arrow_or_none(values, pa.int64())
    return None if ints is None else bools_from_ints(ints)


def iso_text(pattern: str) -> Columnar:
    """date/datetime.fromisoformat converters (SQLite's, MySQL's) on text in the one strict ISO form."""
    return partial(_iso_text, pattern)


def _iso_text(pattern: str, values: Sequence[Any], column: Column, _nulled: NulledValues) -> pa.Array | None:
    if not kinds(values) <= {str}:
        return None
    return iso_cast(pa.array(values, type=pa.string()), pattern, column.arrow_type)


def decimals_from_numbers(values: Sequence[Any], column: Column, _nulled: NulledValues) -> pa.Array | None:
    """SQLite's NUMERIC(p, s) (decimal_value then finite_decimal) for stored REALs and INTEGERs:
    Decimal(repr(value)), cast from the same text; a value that needs rounding is left to it."""
    if not kinds(values) <= {float, int}:
        return None
    texts = [None if value is None else repr(value) for value in values]
    try:
        return pa.array(texts, type=pa.string()).cast(column.arrow_type)
    except ARROW_ERRORS:  # NaN, infinities, too many digits: NULL and counted, per value
        return None


# --- on Arrow columns (shared with the readers of the database's text) -----------------------------
def bools_from_ints(ints: pa.Array) -> pa.Array | None:
    """bool_from_int on a whole int64 column, or None when a value is neither 0 nor 1."""
    bounds = pc.min_max(ints).as_py()  # NULLs skipped; both None when there is no value
    if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] > 1):
        return None
    return pc.not_equal(ints, 0)


def iso_cast(texts: pa.Array, pattern: str, arrow_type: pa.DataType) -> pa.Array | None:
    """The fromisoformat converters on a whole string column, where every text has the one strict ISO
    form on which Arrow's cast agrees with them; a TIMESTAMP's text is its UTC wall clock (the
    converters attach UTC). None when a text does not fit or the cast refuses one (February 30):
    the converter makes it NULL and counts it."""
    strict = _fixed_width_iso(texts, pattern)
    if strict is None:
        strict = pc.all(pc.match_substring_regex(texts, pattern=pattern)).as_py() is not False
    if not strict:
        return None
    try:
        if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
            return texts.cast(pa.timestamp(arrow_type.unit)).cast(arrow_type)
        return texts.cast(arrow_type)
    except ARROW_ERRORS:
        return None
