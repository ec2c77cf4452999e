"""Source column types → Arrow type, BigQuery type and per-value converter, kept as data.

A type table maps SQLAlchemy type classes to rules. `lookup` walks the reflected type's class MRO,
most specific class first, and at each class consults the dialect's table before the generic one:
a dialect entry (or override) always wins. A rule is either a fixed `Target` or a small function of
the type instance, only where the mapping depends on the type's parameters (numeric precision,
time zones, arrays, MySQL UNSIGNED). A rule that returns None means "no faithful mapping".

Values BigQuery cannot hold (NaN in NUMERIC, arrays with NULL elements, ...) become NULL here; the
drivers' typecasters do the same for ±infinity and out-of-range dates (see the dialect modules).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, Literal, Union

import pyarrow as pa
from sqlalchemy import types as sqltypes
from sqlalchemy.types import TypeEngine

Converter = Callable[[Any], Any]
# How the SELECT reads a column: "native" through SQLAlchemy's result processing for the type;
# "raw" as the DB-API driver returns it (where SQLAlchemy's processing would lose information);
# "text" cast to text by the database itself (its exact rendering, e.g. PostgreSQL interval).
ReadMode = Literal["native", "raw", "text"]

NUMERIC_ARROW = pa.decimal128(38, 9)  # BigQuery NUMERIC: precision 38, scale 9
BIGNUMERIC_ARROW = pa.decimal256(76, 38)  # BigQuery BIGNUMERIC: precision 76(.76), scale 38


@dataclass(frozen=True)
class Target:
    """Where values of one source type land."""

    arrow_type: pa.DataType
    bq_type: str
    convert: Converter | None = None  # applied to non-NULL values only; None: values pass as read
    read: ReadMode = "native"
    repeated: bool = False  # BigQuery REPEATED: arrow_type is a list type


Resolver = Callable[[TypeEngine[Any]], Target | None]
RuleFn = Callable[[TypeEngine[Any], Resolver], Target | None]
Rule = Union[Target, RuleFn]  # noqa: UP007 - a runtime alias: `|` cannot combine a class and Callable
TypeTable = Mapping[type[Any], Rule]


@dataclass(frozen=True)
class TypeExample:
    """One documented row: a source type as users write it, and an instance SQLAlchemy reflects."""

    source: str
    sa_type: TypeEngine[Any]
    note: str = ""


# --- converters ----------------------------------------------------------------------------------
def loads_exact(text: str | bytes) -> Any:
    """json.loads keeping every number exact: non-integers become Decimal (ints are exact already).

    Given to SQLAlchemy as the engine's json_deserializer, so drivers decode JSON with it."""
    return json.loads(text, parse_float=Decimal)


def compact_json(value: Any) -> str:
    """Compact JSON text of a decoded value (no spaces, UTF-8 kept), numbers exactly as stored."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except TypeError:  # a Decimal from loads_exact: the C encoder cannot write it verbatim
        return _encode_exact(value)


def _encode_exact(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # its literal as parsed, e.g. 1.10000000000000000001 or 1E+400
    if isinstance(value, dict):
        items = (f"{_encode_exact(str(key))}:{_encode_exact(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode_exact(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def finite_decimal(value: Decimal) -> Decimal | None:
    """NUMERIC/BIGNUMERIC hold no NaN (PostgreSQL numeric(p,s) may): NULL instead."""
    return value if value.is_finite() else None


def decimal_text(value: Decimal | float | int) -> str:
    """The exact decimal text, never scientific notation; NaN and ±Infinity spelled out."""
    if not isinstance(value, Decimal):  # SQLite may hand back a float or int: its shortest text
        value = Decimal(str(value))
    return format(value, "f")


def _list_converter(item_convert: Converter | None, values: Sequence[Any]) -> list[Any] | None:
    # BigQuery arrays hold neither NULL elements nor nested arrays (multi-dimensional PostgreSQL
    # arrays reflect as one-dimensional): such a value cannot be stored, so it becomes NULL.
    if any(item is None or isinstance(item, list) for item in values):
        return None
    return list(values) if item_convert is None else [item_convert(item) for item in values]


# --- targets -------------------------------------------------------------------------------------
INT64 = Target(pa.int64(), "INT64")
FLOAT64 = Target(pa.float64(), "FLOAT64", read="raw")  # MySQL DOUBLE reflects as asdecimal=True
BOOL = Target(pa.bool_(), "BOOL")
BOOL_FROM_INT = Target(pa.bool_(), "BOOL", convert=bool)
STRING = Target(pa.string(), "STRING")
STRING_RAW = Target(pa.string(), "STRING", read="raw")  # enums: the driver's text, unvalidated
STRING_OF = Target(pa.string(), "STRING", convert=str)  # uuid.UUID and similar objects
STRING_CAST = Target(pa.string(), "STRING", read="text")
BYTES = Target(pa.binary(), "BYTES")
DATE = Target(pa.date32(), "DATE")
TIME = Target(pa.time64("us"), "TIME")
DATETIME = Target(pa.timestamp("us"), "DATETIME")
TIMESTAMP = Target(pa.timestamp("us", tz="UTC"), "TIMESTAMP")
JSON = Target(pa.string(), "JSON", convert=compact_json)
NUMERIC = Target(NUMERIC_ARROW, "NUMERIC", convert=finite_decimal)
BIGNUMERIC = Target(BIGNUMERIC_ARROW, "BIGNUMERIC", convert=finite_decimal)
DECIMAL_TEXT = Target(pa.string(), "STRING", convert=decimal_text)


# --- rules ---------------------------------------------------------------------------------------
def numeric_target(precision: int | None, scale: int | None) -> Target:
    """NUMERIC when (precision, scale) fits it, else BIGNUMERIC, else the exact decimal text."""
    if precision is None:  # unbounded: any value, any scale
        return DECIMAL_TEXT
    scale = scale or 0
    if scale <= 9 and precision - scale <= 29:
        return NUMERIC
    if scale <= 38 and precision - scale <= 38:
        return BIGNUMERIC
    return DECIMAL_TEXT


def numeric_rule(sa_type: TypeEngine[Any], _resolve: Resolver) -> Target:
    return numeric_target(getattr(sa_type, "precision", None), getattr(sa_type, "scale", None))


def datetime_rule(sa_type: TypeEngine[Any], _resolve: Resolver) -> Target:
    return TIMESTAMP if getattr(sa_type, "timezone", False) else DATETIME


def time_rule(sa_type: TypeEngine[Any], _resolve: Resolver) -> Target | None:
    # TIME WITH TIME ZONE has no BigQuery counterpart (TIME is a wall-clock time).
    return None if getattr(sa_type, "timezone", False) else TIME


def array_rule(sa_type: TypeEngine[Any], resolve: Resolver) -> Target | None:
    """An array of a mapped scalar: REPEATED of the element's mapping."""
    item = resolve(getattr(sa_type, "item_type", sqltypes.NullType()))
    if item is None or item.repeated or (getattr(sa_type, "dimensions", None) or 1) > 1:
        return None
    return Target(
        pa.list_(item.arrow_type),
        item.bq_type,
        convert=partial(_list_converter, item.convert),
        read="text" if item.read == "text" else "native",
        repeated=True,
    )


GENERIC: TypeTable = {
    sqltypes.Boolean: BOOL,
    sqltypes.Integer: INT64,
    sqltypes.Float: FLOAT64,
    sqltypes.Numeric: numeric_rule,
    sqltypes.Enum: STRING_RAW,
    sqltypes.String: STRING,
    sqltypes.Uuid: STRING_OF,
    sqltypes._Binary: BYTES,  # base of LargeBinary, BINARY, VARBINARY and MySQL's BLOBs
    sqltypes.Date: DATE,
    sqltypes.DateTime: datetime_rule,
    sqltypes.Time: time_rule,
    sqltypes.JSON: JSON,
    sqltypes.ARRAY: array_rule,
}


def lookup(sa_type: TypeEngine[Any], dialect_table: TypeTable) -> Target | None:
    """The target of a reflected type, or None when neither table maps any class of its MRO."""
    for cls in type(sa_type).__mro__:
        rule = dialect_table.get(cls, GENERIC.get(cls))
        if rule is None:
            continue
        if isinstance(rule, Target):
            return rule
        return rule(sa_type, partial(lookup, dialect_table=dialect_table))
    return None


# --- documentation -------------------------------------------------------------------------------
_DOC_HEADER = """\
# Type mapping

Generated from `worker/sources/typemap.py` and the dialect tables by
`worker.sources.types_markdown()`; `tests/sources/test_typemap.py` fails when this file is stale.
Regenerate with:

    .venv/bin/python -c 'import worker.sources as s; s.write_types_doc()'

Rules that apply everywhere:

- A column whose type is not listed fails the run with `UnsupportedTypeError` naming it.
- Values BigQuery cannot hold become NULL: ±infinity and out-of-range (year > 9999, BC) dates and
  timestamps, MySQL zero dates, NaN in NUMERIC/BIGNUMERIC, arrays with NULL elements or nesting.
- Decimals are exact: NUMERIC is decimal128(38, 9), BIGNUMERIC decimal256(76, 38); anything wider
  is the exact decimal text (STRING, never scientific notation; NaN as `NaN`).
- JSON is re-serialised compactly (`{"a":1}`), numbers exactly as stored; a JSON `null` value is
  read as SQL NULL.
"""


def render_markdown(sections: Sequence[tuple[str, TypeTable, Sequence[TypeExample]]]) -> str:
    """Markdown tables, one per dialect, from the real lookups of each documented example."""
    parts = [_DOC_HEADER]
    for title, table, examples in sections:
        parts.append(f"\n## {title}\n\n| source type | Arrow | BigQuery | notes |\n|---|---|---|---|\n")
        parts.extend(_doc_row(example, table) for example in examples)
    return "".join(parts)


def _doc_row(example: TypeExample, table: TypeTable) -> str:
    target = lookup(example.sa_type, table)
    if target is None:
        return f"| {example.source} | — | unsupported | {example.note} |\n"
    bq_type = f"{target.bq_type} (REPEATED)" if target.repeated else target.bq_type
    return f"| {example.source} | `{target.arrow_type}` | {bq_type} | {example.note} |\n"
