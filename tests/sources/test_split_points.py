"""`split_point`: where a sub-window of at most N rows ends, read in the snapshot by index reads, for
each kind of cursor (SQLite here; PostgreSQL and MariaDB in e2e/test_big_tables.py and the kill
suite): walking a window by its split points reads every row once and never splits a cursor value."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.sources import make_request, read_rows
from worker.sources import get_source
from worker.sources.base import SourceTable
from worker.window import Window

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(sqlite_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def walk(snap: SourceTable, window: Window, rows: int) -> list[list[int]]:
    """The ids of each sub-window, walking `window` by split points as the runner does."""
    parts: list[list[int]] = []
    rest: Window | None = window
    while rest is not None:
        bound = snap.split_point(rest, rows)
        sub = Window(rest.column, rest.low, rest.high if bound is None else bound)
        parts.append(sorted(r["id"] for r in read_rows(snap, sub)))
        rest = None if bound is None else Window(rest.column, bound, rest.high)
    return parts


@pytest.mark.parametrize(("column_type", "value"), [
    ("TIMESTAMP", lambda i: (T0 + timedelta(seconds=i // 3)).strftime("%Y-%m-%d %H:%M:%S")),  # ties of 3
    ("DATETIME", lambda i: (T0 + timedelta(microseconds=i // 2)).replace(tzinfo=None)
     .isoformat("T" if i % 3 else " ")),  # written with a T or a space, ties of 2
    ("INTEGER", lambda i: i // 4),  # ties of 4
])
def test_walking_a_window_by_split_points_reads_every_row_once(
    db: sqlite3.Connection, sqlite_path: Path, column_type: str, value: object
) -> None:
    db.execute(f"CREATE TABLE t (id INTEGER, c {column_type})")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, value(i)) for i in range(100)])  # type: ignore[operator]
    request = make_request("sqlite", {"database": str(sqlite_path)}, "t", timestamp_column="c")
    with get_source("sqlite").snapshot(request) as snap:
        window = snap.plan_window([], 0)
        parts = walk(snap, window, 10)
    assert sorted(i for part in parts for i in part) == list(range(100))
    assert all(len(part) <= 12 for part in parts) and len(parts) >= 9
    cursor_of = {i: str(value(i)).replace("T", " ") for i in range(100)}  # type: ignore[operator]
    values = [{cursor_of[i] for i in part} for part in parts]
    assert all(not (a & b) for n, a in enumerate(values) for b in values[n + 1:])  # no value split


def test_a_cursor_value_with_more_rows_than_a_sub_window_stays_whole(
    db: sqlite3.Connection, sqlite_path: Path
) -> None:
    db.execute("CREATE TABLE t (id INTEGER, c INTEGER)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, 7 if i < 25 else i) for i in range(40)])
    request = make_request("sqlite", {"database": str(sqlite_path)}, "t", timestamp_column="c")
    with get_source("sqlite").snapshot(request) as snap:
        parts = walk(snap, snap.plan_window([], 0), 10)
    assert [len(p) for p in parts] == [25, 10, 5]
