"""Per-value converters, each declared once with its fast forms: the driver's value → the value
BigQuery stores, or None when it cannot.

A converter is applied to non-NULL values only, so returning None always means "BigQuery cannot hold
this value": the batch builder (`worker.sources.arrays`) counts it per column, or refuses it in strict
mode. Converters never raise for a bad value; they return None.

Every converter is a `Converter`: its per-value function (the reference) and how each fast reader
reproduces it exactly, or an explicit None where a reader has no such form. The fast readers consult
these declarations, never a table of their own keyed by function (docs/sources.md). Dialects declare
theirs next to their type tables the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Literal

from worker.sources import columnar, fastjson, jsontext
from worker.sources.arrays import Unrepresentable, ValueFn
from worker.sources.columnar import Columnar

_BOOLS = {0: False, 1: True}

# How a reader that receives the database's own text of each value reproduces a converter on a
# whole Arrow column of those texts (see FromText).
TextForm = Literal["itself", "cast", "iso", "bools", "json"]


@dataclass(frozen=True)
class FromText:
    """A converter's form for the readers of the database's text (PostgreSQL COPY's text format,
    MySQL's text protocol):

    - "itself": the text is the converter's result;
    - "cast": Arrow's cast of the text to the column's type is, wherever the cast succeeds;
    - "iso": that cast where every text has the strict ISO form `pattern` (`columnar.iso_cast`);
    - "bools": the text is 0 or 1, false or true (`columnar.bools_from_ints`);
    - "json": `fastjson.json_column`, which proves json_text's result in bulk.

    A column holding a text its form refuses converts per value: `driver(text)` (what the DB-API
    driver returns for that text), then the converter, so NULLs are counted exactly alike."""

    form: TextForm
    driver: Callable[[str], Any] = str
    pattern: str = ""


TEXT_ITSELF = FromText("itself")
JSON_FROM_TEXT = FromText("json")
BOOLS_FROM_TEXT = FromText("bools", driver=int)


def cast_from_text(driver: Callable[[str], Any]) -> FromText:
    return FromText("cast", driver=driver)


def iso_from_text(pattern: str) -> FromText:
    return FromText("iso", pattern=pattern)


@dataclass(frozen=True)
class Converter:
    """A per-value converter and, declared with it, how each fast reader gives its exact results.

    `per_value` is the reference. Every other field is required: None declares that the reader has
    no such form (the generic path then converts the column value by value; COPY and the raw MySQL
    reader leave a table holding such a column to the generic path). Callable like `per_value`."""

    per_value: ValueFn
    _: KW_ONLY
    columnar: Columnar | None  # the generic path: the column's driver values at once
    pg_copy: FromText | None  # PostgreSQL COPY (`worker.sources.pg_copy`)
    mysql_raw: FromText | None  # MySQL's text protocol (`worker.sources.mysql_raw`)

    def __call__(self, value: Any) -> Any:
        return self.per_value(value)


def per_value_only(convert: ValueFn) -> Converter:
    """A converter that no fast reader reproduces: the generic path runs it value by value."""
    return Converter(convert, columnar=None, pg_copy=None, mysql_raw=None)


def columnar_only(convert: ValueFn, twin: Columnar) -> Converter:
    """A converter of the generic path alone (SQLite's), with its whole-column twin."""
    return Converter(convert, columnar=twin, pg_copy=None, mysql_raw=None)


# --- JSON ----------------------------------------------------------------------------------------
# The source's JSON text as compact JSON for PARSE_JSON (`jsontext.json_text`).
json_text = Converter(
    jsontext.json_text, columnar=fastjson.json_texts, pg_copy=JSON_FROM_TEXT, mysql_raw=JSON_FROM_TEXT
)


# --- numbers -------------------------------------------------------------------------------------
def _finite_decimal(value: Decimal) -> Decimal | None:
    """NUMERIC/BIGNUMERIC hold no NaN (PostgreSQL numeric(p,s) may)."""
    return value if value.is_finite() else None


def _decimal_text(value: Decimal | float | int | str) -> str | None:
    """The exact decimal text, never scientific notation; NaN and ±Infinity spelled out."""
    if not isinstance(value, Decimal):  # SQLite may hand back a float, an int or text
        try:
            value = Decimal(str(value))
        except ArithmeticError:
            return None
    return format(value, "f")


def _bool_from_int(value: Any) -> bool | None:
    """MySQL BOOL is TINYINT(1), SQLite BOOLEAN an integer: only 0 and 1 are booleans; any other
    number (MySQL reads 2 as true) would lose its value, so it is not taken for one."""
    return _BOOLS.get(value) if isinstance(value, int) else None


# Arrow refuses NaN and ±Infinity, whose text it will not cast either: those go per value.
finite_decimal = Converter(
    _finite_decimal,
    columnar=columnar.all_of(Decimal),
    pg_copy=cast_from_text(Decimal),
    mysql_raw=cast_from_text(Decimal),
)
# PostgreSQL's numeric_out never writes an exponent: its text is already the exact decimal text.
decimal_text = Converter(_decimal_text, columnar=None, pg_copy=TEXT_ITSELF, mysql_raw=None)
bool_from_int = Converter(_bool_from_int, columnar=columnar.bools, pg_copy=None, mysql_raw=BOOLS_FROM_TEXT)


# --- objects -------------------------------------------------------------------------------------
# str(uuid.UUID) is PostgreSQL's own spelling of a uuid (lower case, hyphens).
uuid_text = Converter(str, columnar=None, pg_copy=TEXT_ITSELF, mysql_raw=None)


# --- arrays --------------------------------------------------------------------------------------
def list_converter(item_convert: ValueFn | None, values: Sequence[Any]) -> list[Any] | None:
    """An array for BigQuery REPEATED, which holds neither NULL elements nor nested arrays (a
    multi-dimensional PostgreSQL array reflects as one-dimensional): such a value cannot be stored."""
    if not isinstance(values, list | tuple):  # a driver that did not parse the array: never guess
        return None
    if any(item is None or isinstance(item, list | tuple | Unrepresentable) for item in values):
        return None
    if item_convert is None:
        return list(values)
    items = [item_convert(item) for item in values]
    return None if any(item is None for item in items) else items


def list_of(item: Converter | None) -> Converter:
    """The converter of an array of `item` values (arrays have no fast form: REPEATED stays generic)."""
    return per_value_only(partial(list_converter, None if item is None else item.per_value))


# Re-exported: the JSON helpers live with json_text's reference implementation.
loads_exact = jsontext.loads_exact
compact_json = jsontext.compact_json
bigquery_json_number = jsontext.bigquery_json_number

__all__ = [
    "BOOLS_FROM_TEXT",
    "JSON_FROM_TEXT",
    "TEXT_ITSELF",
    "Converter",
    "FromText",
    "Unrepresentable",
    "bigquery_json_number",
    "bool_from_int",
    "cast_from_text",
    "columnar_only",
    "compact_json",
    "decimal_text",
    "finite_decimal",
    "iso_from_text",
    "json_text",
    "list_converter",
    "list_of",
    "loads_exact",
    "per_value_only",
    "uuid_text",
]
