"""One column of a batch: Python values → one Arrow array of the column's type.

A value BigQuery cannot hold (a converter said None, the driver said `Unrepresentable`, or it has no
Arrow form of the column's type, as when SQLite stores text in an INTEGER column) becomes NULL and is
counted per column for `run.completed`; in strict mode it fails the run instead.

This is the bottom of `worker.sources`: it knows no converter, reader or dialect (docs/sources.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

from worker.columns import Column
from worker.errors import SourceDataError

# A per-value function: one non-NULL value in, the value BigQuery stores out (None: it cannot).
ValueFn = Callable[[Any], Any]

_ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError)
# Values echoed in a strict-mode error. Text and bytes may be personal data: only their kind is named.
_SHOWN = (int, float, Decimal, date, time, timedelta)


@dataclass(frozen=True)
class Unrepresentable:
    """A value read from the source that no BigQuery value of the column's type holds.

    Drivers that would otherwise turn such values into NULL themselves (psycopg2's date typecasters)
    return one instead, so that those values are counted too. `text` is how the source wrote it
    (e.g. 'infinity', '10000-01-01'), for strict-mode errors."""

    text: str


@dataclass
class NulledValues:
    """Per column, how many values BigQuery cannot hold were loaded as NULL."""

    strict: bool = False  # the request's strict_types: refuse such a value instead
    counts: dict[str, int] = field(default_factory=dict)

    def record(self, column: Column, value: Any) -> None:
        if self.strict:
            raise SourceDataError(
                f"column {column.name!r} ({column.source_type}): {describe(value)} cannot be held by "
                f"BigQuery {column.bq_type}; strict_types refuses to load it as NULL"
            )
        self.counts[column.name] = self.counts.get(column.name, 0) + 1


def describe(value: Any) -> str:
    if isinstance(value, Unrepresentable):
        return f"value {value.text!r}"
    if isinstance(value, _SHOWN):
        return f"value {value!r}"
    return f"a {type(value).__name__} value"


def column_array(
    values: Sequence[Any], column: Column, convert: ValueFn | None, nulled: NulledValues
) -> pa.Array:
    """The column's Arrow array; values BigQuery cannot hold are NULL and recorded in `nulled`."""
    prepared = [_prepared(value, convert, column, nulled) for value in values]
    try:
        return pa.array(prepared, type=column.arrow_type)
    except _ARROW_ERRORS:
        # Rare (the type tables make values fit): find the values that do not, one by one.
        return pa.array([_fitted(value, column, nulled) for value in prepared], type=column.arrow_type)


def _prepared(value: Any, convert: ValueFn | None, column: Column, nulled: NulledValues) -> Any:
    if value is None:
        return None
    if isinstance(value, Unrepresentable):
        nulled.record(column, value)
        return None
    if convert is None:
        return value
    converted = convert(value)
    if converted is None:
        nulled.record(column, value)
    return converted


def _fitted(value: Any, column: Column, nulled: NulledValues) -> Any:
    if value is None:
        return None
    try:
        pa.scalar(value, type=column.arrow_type)
    except _ARROW_ERRORS:
        nulled.record(column, value)
        return None
    return value
