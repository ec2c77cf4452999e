"""The incremental window of a transactional run: rows with low <= cursor < high.

Bounds are kept as typed Python values (datetime, date or int) and written as text with exact
precision: ISO-8601 with microseconds, and an explicit offset for zoned values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

CursorValue = datetime | date | int


@dataclass(frozen=True)
class Window:
    column: str
    low: CursorValue | None  # inclusive; None: from the beginning of time
    high: CursorValue  # exclusive

    @property
    def low_text(self) -> str | None:
        return None if self.low is None else cursor_text(self.low)

    @property
    def high_text(self) -> str:
        return cursor_text(self.high)

    @property
    def low_key(self) -> str | None:
        return None if self.low is None else cursor_key(self.low)

    @property
    def high_key(self) -> str:
        return cursor_key(self.high)


def cursor_key(value: CursorValue) -> str:
    """A text that sorts like the value (stored in the ledger, compared in SQL for overlaps).

    Zoned datetimes in UTC and naive ones as they are (fixed-width ISO, 4-digit years sort right);
    integers offset to non-negative and zero-padded to 20 digits.
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return f"{value + 2**63:020d}"


def cursor_text(value: CursorValue) -> str:
    """Exact text of a cursor value: microseconds always, offset only for zoned datetimes."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
