"""The SQLite source against a real database file (a fresh file per test)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.sources import make_request, read_rows, spy_cursors
from worker import errors
from worker.messages import EtlRunRequest
from worker.sources import get_source
from worker.sources.sqlalchemy_source import SqlAlchemyTable
from worker.window import Window


@pytest.fixture
def db(sqlite_path: Path) -> Iterator[sqlite3.Connection]:
    """A writer on the source file, in WAL mode so that it can commit while a snapshot reads."""
    conn = sqlite3.connect(sqlite_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def request_for(sqlite_path: Path) -> Callable[..., EtlRunRequest]:
    def build(table: str, **fields: Any) -> EtlRunRequest:
        return make_request("sqlite", {"database": str(sqlite_path)}, table, **fields)

    return build


def test_selected_columns_in_request_order(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript("CREATE TABLE t (a INTEGER, b TEXT, c DATE)")
    with get_source("sqlite").snapshot(request_for("t", selected_columns=["c", "a"])) as snap:
        assert [(c.name, c.source_type) for c in snap.columns] == [("c", "date"), ("a", "integer")]


def test_missing_file_is_a_configuration_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"
    request = make_request("sqlite", {"database": str(path)}, "t")
    with pytest.raises(errors.ConfigurationError, match=r"absent\.sqlite"):
        get_source("sqlite").snapshot(request).__enter__()
    assert not path.exists()


def test_missing_table_and_column_are_named(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript("CREATE TABLE t (a INTEGER)")
    with pytest.raises(errors.SourceSchemaError, match="nope"):
        get_source("sqlite").snapshot(request_for("nope")).__enter__()
    with pytest.raises(errors.SourceSchemaError, match="'ghost'"):
        get_source("sqlite").snapshot(request_for("t", selected_columns=["ghost"])).__enter__()


def test_column_without_declared_type_is_unsupported(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript("CREATE TABLE t (a INTEGER, anything)")
    with pytest.raises(errors.UnsupportedTypeError, match="'anything'"):
        get_source("sqlite").snapshot(request_for("t")).__enter__()


def test_every_type_round_trips(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript(
        """CREATE TABLE t (i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC(10, 2), nu NUMERIC, ok BOOLEAN,
                           d DATE, dt DATETIME, ts TIMESTAMP, tm TIME, js JSON);
        INSERT INTO t VALUES (-9223372036854775808, 0.1, 'héllo 🎉', x'00ff', 12.34, 0.0000001, 1,
                              '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02T03:04:05+02:00',
                              '23:59:59.999999', '{"a": [1, 2.50]}');
        INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, 0, 'not a date', 17, NULL, 'noon', NULL)"""
    )
    with get_source("sqlite").snapshot(request_for("t")) as snap:
        first, second = read_rows(snap)
    assert first == {
        "i": -9223372036854775808,
        "r": 0.1,
        "t": "héllo 🎉",
        "b": b"\x00\xff",
        "n": Decimal("12.34"),
        "nu": "0.0000001",  # SQLite stored a REAL: its shortest text, exactly
        "ok": True,
        "d": date(2024, 2, 29),
        "dt": datetime(2024, 1, 2, 3, 4, 5, 123456),
        "ts": datetime(2024, 1, 2, 1, 4, 5),
        "tm": time(23, 59, 59, 999999),
        "js": '{"a":[1,2.50]}',
    }
    assert second == dict.fromkeys(first, None) | {"ok": False}  # unreadable dates are NULL


def test_batches_respect_batch_rows(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript("CREATE TABLE t (id INTEGER)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(25)])
    with get_source("sqlite").snapshot(request_for("t")) as snap, spy_cursors() as seen:
        assert [batch.num_rows for batch in snap.iter_batches(None, 10)] == [10, 10, 5]
    assert [e.stream_results for e in seen] == [True]


EVENTS = [
    (1, "2024-01-01 10:00:00.000000", "2024-01-01"),
    (2, "2024-01-01 10:00:00.000001", "2024-01-02"),
    (3, "2024-01-01 10:59:59.999999", "2024-01-03"),
    (4, "2024-01-01 11:00:00.000000", "2024-01-04"),
    (5, None, None),
]


@pytest.fixture
def events(db: sqlite3.Connection) -> sqlite3.Connection:
    db.executescript("CREATE TABLE events (id INTEGER, ts DATETIME, d DATE)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?)", EVENTS)
    return db


def _ids(snap: Any, window: Window) -> list[int]:
    rows = read_rows(snap, window, batch_rows=2)
    assert snap.count_rows(window) == len(rows)
    return sorted(row["id"] for row in rows)


def test_window_is_half_open_to_the_microsecond(events: sqlite3.Connection, request_for: Any) -> None:
    with get_source("sqlite").snapshot(request_for("events", timestamp_column="ts")) as snap:
        assert _ids(snap, Window("ts", datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11))) == [1, 2, 3]
        assert _ids(snap, Window("d", date(2024, 1, 2), date(2024, 1, 4))) == [2, 3]
        assert _ids(snap, Window("id", 2, 4)) == [2, 3]


def test_plan_window_uses_the_utc_clock_minus_lag(events: sqlite3.Connection, request_for: Any) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    with get_source("sqlite").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window(["2024-01-01T12:00:00+02:00", "2023-01-01"], lag_s=60)
        assert window.low == datetime(2024, 1, 1, 10)
        assert _ids(snap, window) == [1, 2, 3, 4]
    after = datetime.now(UTC).replace(tzinfo=None)
    assert isinstance(window.high, datetime)
    assert before - timedelta(seconds=61) <= window.high <= after - timedelta(seconds=60)


def test_integer_cursor(events: sqlite3.Connection, request_for: Any) -> None:
    with get_source("sqlite").snapshot(request_for("events", timestamp_column="id")) as snap:
        window = snap.plan_window(["3"], lag_s=0)
        assert (window.low, window.high) == (3, 6)
        assert _ids(snap, window) == [3, 4, 5]


def test_rows_committed_after_the_snapshot_opened_are_not_seen(
    events: sqlite3.Connection, request_for: Any
) -> None:
    with get_source("sqlite").snapshot(request_for("events")) as snap:
        events.execute("INSERT INTO events VALUES (6, '2024-01-01 10:30:00', NULL)")
        assert snap.count_rows(None) == 5 and len(read_rows(snap)) == 5


def test_the_snapshot_is_read_only(db: sqlite3.Connection, request_for: Any) -> None:
    db.executescript("CREATE TABLE t (a INTEGER)")
    with (
        get_source("sqlite").snapshot(request_for("t")) as snap,
        pytest.raises(sa.exc.OperationalError, match="readonly"),
    ):
        assert isinstance(snap, SqlAlchemyTable)
        snap._conn.execute(sa.text("INSERT INTO t VALUES (1)"))


def test_datetime_cursors_stored_without_fraction_or_with_t_are_windowed_by_value(
    db: sqlite3.Connection, request_for: Any
) -> None:
    # Given datetimes stored in every ISO form SQLite applications write
    db.executescript(
        "CREATE TABLE ev (id INTEGER, ts DATETIME);"
        "INSERT INTO ev VALUES (1, '2024-05-01 00:00:00'), (2, '2024-05-01T00:00:00.000001'),"
        " (3, '2024-05-01 00:00:00.5'), (4, '2024-05-01'), (5, '2024-05-02 00:00:00'),"
        " (6, '2024-04-30 23:59:59.999999');"
    )
    request = request_for("ev", load_type="transactional", timestamp_column="ts")
    with get_source("sqlite").snapshot(request) as snap:
        window = Window("ts", datetime(2024, 5, 1), datetime(2024, 5, 2))
        ids = [i for b in snap.iter_batches(window, 10) for i in b.column("id").to_pylist()]
        count = snap.count_rows(window)
    # Then the bounds are compared as values: midnight is inside, the next day is not
    assert sorted(ids) == [1, 2, 3, 4] and count == 4
