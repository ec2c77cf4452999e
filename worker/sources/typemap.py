"""Source column types → BigQuery type (hence Arrow type) and per-value converter, kept as data.

A type table maps SQLAlchemy type classes to rules. `lookup` walks the reflected type's class MRO,
most specific class first, and at each class consults the dialect's table before the generic one:
a dialect entry (or override) always wins. A rule is either a fixed `Target` or a small function of
the type instance, only where the mapping depends on the type's parameters (numeric precision,
time zones, arrays, MySQL UNSIGNED). A rule that returns None means "no faithful mapping".

Policies (docs/types.md renders them with every table):
- naive date-times → DATETIME, zoned ones → TIMESTAMP (UTC);
- decimals → NUMERIC when (precision, scale) fits (38, 9), else BIGNUMERIC, else exact STRING; never
  FLOAT64; unsigned 64-bit integers → NUMERIC;
- JSON → JSON (staged as STRING, PARSE_JSON at commit); arrays → REPEATED;
- uuid, inet, interval, enum, time with time zone → STRING in the source's own spelling;
- a value BigQuery cannot hold → NULL, counted per column (`worker.sources.arrays`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Union

import pyarrow as pa
from sqlalchemy import types as sqltypes
from sqlalchemy.types import TypeEngine

from worker.columns import bq_arrow_type
from worker.sources.converters import (
    Converter,
    bool_from_int,
    compact_json,
    decimal_text,
    finite_decimal,
    json_text,
    list_of,
    loads_exact,
    uuid_text,
)

# How the SELECT reads a column: "native" through SQLAlchemy's result processing for the type;
# "raw" as the DB-API driver returns it (where SQLAlchemy's processing would lose information);
# "text" / "numeric" cast by the database itself to text (its exact spelling, e.g. PostgreSQL
# interval) or to an unconstrained decimal (PostgreSQL money).
ReadMode = Literal["native", "raw", "text", "numeric"]

NUMERIC_ARROW = bq_arrow_type("NUMERIC")  # BigQuery NUMERIC: precision 38, scale 9
BIGNUMERIC_ARROW = bq_arrow_type("BIGNUMERIC")  # BigQuery BIGNUMERIC: precision 76(.76), scale 38


@dataclass(frozen=True)
class Target:
    """Where values of one source type land."""

    arrow_type: pa.DataType  # always bq_arrow_type(bq_type, repeated): see `target`
    bq_type: str
    # Applied to non-NULL values only; None: values pass as read. A `Converter` declares its fast
    # forms with it, so a bare function is refused: no reader could know how to reproduce it.
    convert: Converter | None = None
    read: ReadMode = "native"
    repeated: bool = False  # BigQuery REPEATED: arrow_type is a list type

    def __post_init__(self) -> None:
        if self.convert is not None and not isinstance(self.convert, Converter):
            raise TypeError(f"{self.convert!r} is not a Converter: declare its fast forms with it "
                            "(worker.sources.converters)")


def target(bq_type: str, convert: Converter | None = None, read: ReadMode = "native") -> Target:
    """A scalar Target whose Arrow type follows from its BigQuery type."""
    return Target(bq_arrow_type(bq_type), bq_type, convert, read)


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


@dataclass(frozen=True)
class Loss:
    """A documented kind of source value that does not reach BigQuery as it was."""

    types: str  # the source types concerned
    values: str  # which of their values
    becomes: str  # what BigQuery gets: NULL (counted in values_nulled) or another spelling


# --- targets -------------------------------------------------------------------------------------
INT64 = target("INT64")
FLOAT64 = target("FLOAT64", read="raw")  # MySQL DOUBLE reflects as asdecimal=True
BOOL = target("BOOL")
BOOL_FROM_INT = target("BOOL", convert=bool_from_int)
STRING = target("STRING")
STRING_RAW = target("STRING", read="raw")  # enums: the driver's text, unvalidated
STRING_OF = target("STRING", convert=uuid_text)  # uuid.UUID
STRING_CAST = target("STRING", read="text")
BYTES = target("BYTES")
DATE = target("DATE")
TIME = target("TIME")
DATETIME = target("DATETIME")
TIMESTAMP = target("TIMESTAMP")
# Read as the database's JSON text: a driver's own decoding would turn a JSON null into SQL NULL.
JSON = target("JSON", convert=json_text, read="text")
NUMERIC = target("NUMERIC", convert=finite_decimal)
BIGNUMERIC = target("BIGNUMERIC", convert=finite_decimal)
DECIMAL_TEXT = target("STRING", convert=decimal_text)


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


def time_rule(sa_type: TypeEngine[Any], _resolve: Resolver) -> Target:
    # BigQuery TIME is a wall-clock time with no offset; converting to UTC would depend on a date
    # the value does not have. The source's text ('12:34:56.123456+05:30') keeps everything.
    return STRING_CAST if getattr(sa_type, "timezone", False) else TIME


def array_rule(sa_type: TypeEngine[Any], resolve: Resolver) -> Target | None:
    """An array of a mapped scalar: REPEATED of the element's mapping."""
    item = resolve(getattr(sa_type, "item_type", sqltypes.NullType()))
    if item is None or item.repeated or (getattr(sa_type, "dimensions", None) or 1) > 1:
        return None
    return Target(
        pa.list_(item.arrow_type),
        item.bq_type,
        convert=list_of(item.convert),
        read=item.read if item.read in ("text", "numeric") else "native",  # cast as an array of it
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


NULLED = "NULL (counted)"
# Values that do not survive whatever the source (docs/types.md); each dialect lists its own.
GENERIC_LOSSES = (
    Loss("arrays", "an array with a NULL element, or a nested (multi-dimensional) array", NULLED),
    Loss("arrays", "NULL", "`[]`: BigQuery stores a NULL array as an empty one"),
    Loss(
        "JSON",
        "a number BigQuery JSON cannot hold exactly: beyond INT64/UINT64 and not a FLOAT64 whose shortest "
        "text has the same value (`12345678901234567890123`, `1.10000000000000000001`, `1e400`)",
        f"{NULLED}: `PARSE_JSON` would fail the whole commit",
    ),
    Loss("JSON", "a document nested more than 500 levels deep (BigQuery's limit)",
         f"{NULLED}: `PARSE_JSON` would fail the whole commit"),
    Loss(
        "JSON",
        "whitespace, number spelling (`2.50`), duplicate keys",
        "BigQuery's own JSON: compact, numbers as INT64/UINT64/FLOAT64 (`2.5`), the last of duplicate "
        "keys (as PostgreSQL's jsonb)",
    ),
    Loss("decimals (NUMERIC, BIGNUMERIC)", "trailing zeros of the declared scale",
         "the same value: BigQuery keeps no scale (`1.50` reads `1.5`)"),
)

__all__ = [
    "BIGNUMERIC_ARROW",
    "NUMERIC_ARROW",
    "Loss",
    "Target",
    "TypeExample",
    "TypeTable",
    "compact_json",
    "decimal_text",
    "finite_decimal",
    "loads_exact",
    "lookup",
    "numeric_target",
    "target",
]
