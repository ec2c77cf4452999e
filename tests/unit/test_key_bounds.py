"""A chunk plan's key values come back from their stored JSON text in their column's type
(worker/sources/key_bounds.py), and the plan's identity does not change on the way."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from worker.catalog_chunks import ChunkPlan, plan_of
from worker.sources.key_bounds import KEY_BOUND_TYPES, typed_bound

ROWS = [  # (BigQuery type of the key column, a key value as the database returns it)
    ("INT64", 2**62),
    ("FLOAT64", 0.1),
    ("BOOL", True),
    ("STRING", "2024-03-01"),  # text that looks like a date stays text
    ("NUMERIC", Decimal("10.25")),
    ("BIGNUMERIC", Decimal("-12345678901234567890.123456789012345678")),
    ("DATE", date(2024, 3, 1)),
    ("DATETIME", datetime(2024, 3, 1, 23, 59, 59, 123456)),
    ("TIMESTAMP", datetime(2024, 3, 1, 12, 0, 0, 1, tzinfo=UTC)),
    ("TIME", time(12, 30, 0, 5)),
]


def test_every_mapped_type_has_a_row() -> None:
    assert {bq_type for bq_type, _ in ROWS} == set(KEY_BOUND_TYPES)


@pytest.mark.parametrize(("bq_type", "value"), ROWS, ids=[row[0] for row in ROWS])
def test_a_stored_key_value_comes_back_in_its_type(bq_type: str, value: Any) -> None:
    made = plan_of(("k", "n"), [(value, 1)])
    stored = ChunkPlan.from_text(made.to_text())
    back = typed_bound(stored.bounds[0], [bq_type, "INT64"])
    assert back == (value, 1) and type(back[0]) is type(value)
    assert stored.identity == made.identity  # every delivery follows the same plan


def test_a_value_already_in_its_type_is_kept_and_a_wrong_width_is_refused() -> None:
    day = date(2024, 1, 2)
    assert typed_bound((day,), ["DATE"]) == (day,)
    with pytest.raises(ValueError, match="2 columns"):
        typed_bound((1,), ["INT64", "INT64"])
