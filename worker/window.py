"""The incremental window of a transactional run: rows with low <= cursor < high.

Bounds are kept as typed Python values (datetime, date or int) and written as text with exact
precision: ISO-8601 with microseconds, and an explicit offset for zoned values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

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


def cursor_text(value: CursorValue) -> str:
    """Exact text of a cursor value: microseconds always, offset only for zoned datetimes."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
