"""A chunk plan's key values back in their column's type (worker/catalog_chunks.py stores them).

A plan is stored as JSON with `default=str`: integers, floats, booleans and text come back as
they were, but a NUMERIC key comes back as its decimal text, a DATE as `2024-03-01`, a TIMESTAMP or
DATETIME as `2024-03-01 12:00:00.123456[+00:00]`. Compared with the key column as text, such a
bound would be compared the wrong way (or refused by a strict database), so each value is parsed
back by its loaded column's BigQuery type before it is bound. A key of any other type (BYTES,
JSON, ...) is not split: the run keeps the unchunked path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

# BigQuery type of the key column -> how its stored (JSON) form becomes the value again.
KEY_BOUND_TYPES: dict[str, Callable[[Any], Any]] = {
    "INT64": int,
    "FLOAT64": float,
    "BOOL": bool,
    "STRING": str,
    "NUMERIC": Decimal,
    "BIGNUMERIC": Decimal,
    "DATE": date.fromisoformat,
    "DATETIME": datetime.fromisoformat,
    "TIMESTAMP": datetime.fromisoformat,
    "TIME": time.fromisoformat,
}


def typed_bound(values: Sequence[Any], bq_types: Sequence[str]) -> tuple[Any, ...]:
    """One stored key value (one item per key column) in its columns' types; a value already of
    its type (the plan as the first delivery made it) is kept."""
    if len(values) != len(bq_types):
        raise ValueError(f"a key value of {len(values)} items for a key of {len(bq_types)} columns")
    return tuple(_typed(value, bq_type) for value, bq_type in zip(values, bq_types, strict=True))


def _typed(value: Any, bq_type: str) -> Any:
    parse = KEY_BOUND_TYPES[bq_type]
    if value is None or not isinstance(value, str) or parse is str:
        return value
    return parse(value)
