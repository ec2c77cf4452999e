"""The incremental window of a transactional run: rows with low <= cursor < high.

Bounds are kept as typed Python values (datetime, date or int) and written as text with exact
precision: ISO-8601 with microseconds, and an explicit offset for zoned values.
"""

from __future__ import annotations

from collections.abc import Callable
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


def boundary(at_offset: CursorValue | None, first: CursorValue | None,
             next_above: Callable[[CursorValue], CursorValue | None]) -> CursorValue | None:
    """Where the next sub-window ends (exclusive), from three cheap index reads of the window:

    `at_offset`: the cursor of the row at position `chunk_rows` in cursor order (None: the window
    holds at most `chunk_rows` rows, so it is the last sub-window and nothing is split off);
    `first`: the smallest cursor of the window; `next_above(v)`: the smallest cursor above v.

    `[low, at_offset)` holds the rows before that position whose cursor is below it: at most
    `chunk_rows` and, unless they all share one value, at least one. Rows sharing a cursor value
    never straddle two sub-windows. When the first `chunk_rows + 1` rows all have the same cursor
    value, that value's rows form one (larger) sub-window, ending at the next value (None: at the
    window's end).
    """
    if at_offset is None:
        return None
    if first is None or at_offset != first:
        return at_offset
    return next_above(at_offset)
