"""The MySQL source against a real MariaDB 10.11 (a fresh database per test)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import MySQLdb.cursors
import pytest
import sqlalchemy as sa

from tests.sources import connection_of, make_request, mysql_requests, mysql_runner, read_rows, spy_cursors
from worker import errors
from worker.classify import classify
from worker.messages import EtlRunRequest
from worker.sources import get_source
from worker.sources.mysql import MySQLDialect
from worker.sources.sqlalchemy_source import SqlAlchemySource, SqlAlchemyTable
from worker.window import Window

SLACK = timedelta(seconds=1)


@pytest.fixture
def my(mysql_admin: sa.Engine, mysql_db: str) -> Callable[[str], None]:
    """Run ;-separated SQL in the test's database, in a UTC session that allows zero dates."""
    return mysql_runner(mysql_admin, mysql_db)


@pytest.fixture
def request_for(mysql_admin: sa.Engine, mysql_db: str) -> Callable[..., EtlRunRequest]:
    return mysql_requests(mysql_admin, mysql_db)


# --- reflection ------------------------------------------------------------------------------------
def test_selected_columns_in_request_order(my: Callable[[str], None], request_for: Any) -> None:
    my("CREATE TABLE t (a int, b text, c date)")
    with get_source("mysql").snapshot(request_for("t", selected_columns=["c", "a"])) as snap:
        assert [(c.name, c.source_type) for c in snap.columns] == [("c", "date"), ("a", "integer(11)")]


def test_schema_name_selects_the_database(
    my: Callable[[str], None], mysql_admin: sa.Engine, mysql_db: str
) -> None:
    my("CREATE TABLE t (a int)")
    request = make_request("mysql", connection_of(mysql_admin), "t", schema_name=mysql_db)
    with get_source("mysql").snapshot(request) as snap:
        assert [c.name for c in snap.columns] == ["a"]


def test_missing_table_and_column_are_named(my: Callable[[str], None], request_for: Any) -> None:
    my("CREATE TABLE t (a int)")
    with pytest.raises(errors.SourceSchemaError, match="nope"):
        get_source("mysql").snapshot(request_for("nope")).__enter__()
    with pytest.raises(errors.SourceSchemaError, match="'ghost'"):
        get_source("mysql").snapshot(request_for("t", selected_columns=["ghost"])).__enter__()


@pytest.mark.filterwarnings("ignore:Did not recognize type")
def test_unsupported_type_names_column_and_type(my: Callable[[str], None], request_for: Any) -> None:
    my("CREATE TABLE t (a int, g point)")
    with pytest.raises(errors.UnsupportedTypeError, match="'g'"):
        get_source("mysql").snapshot(request_for("t")).__enter__()


# --- values ----------------------------------------------------------------------------------------
ALL_TYPES = """
CREATE TABLE all_types (
  b tinyint(1), ti tinyint, si smallint unsigned, mi mediumint, i int unsigned, bi bigint,
  bu bigint unsigned, dc decimal(12, 3), dw decimal(65, 30), dx decimal(65, 0), f float, d double,
  ch char(3), vc varchar(20), tx text, en enum('x', 'y'), st set('a', 'b', 'c'), bl blob,
  bn binary(3), vb varbinary(5), bt bit(8), yr year, dt date, dtm datetime(6),
  ts timestamp(6) NULL, tm time(6), js json, lt longtext
) CHARACTER SET utf8mb4;
INSERT INTO all_types VALUES (
  1, -128, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615, 123456789.123,
  '12345678901234567890123456789012345.123456789012345678901234567890',
  '12345678901234567890123456789012345678901234567890123456789012345', 1.5, 1.0000000000000002,
  'ab', 'héllo 🎉', 'text', 'y', 'c,a', x'00ff', 'ab', x'0102', b'101', 2024, '2024-02-29',
  '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456', '23:59:59.999999',
  '{"b": [1, 2.50], "a": "é", "f": 18446744073709551615}', 'not json'
);
INSERT INTO all_types (b) VALUES (NULL)
"""

EXPECTED_ALL_TYPES = {
    "b": True,
    "ti": -128,
    "si": 65535,
    "mi": -8388608,
    "i": 4294967295,
    "bi": -9223372036854775808,
    "bu": Decimal("18446744073709551615"),
    "dc": Decimal("123456789.123"),
    "dw": Decimal("12345678901234567890123456789012345.123456789012345678901234567890"),
    "dx": "12345678901234567890123456789012345678901234567890123456789012345",
    "f": 1.5,
    "d": 1.0000000000000002,
    "ch": "ab",
    "vc": "héllo 🎉",
    "tx": "text",
    "en": "y",
    "st": "a,c",
    "bl": b"\x00\xff",
    "bn": b"ab\x00",
    "vb": b"\x01\x02",
    "bt": 5,
    "yr": 2024,
    "dt": date(2024, 2, 29),
    "dtm": datetime(2024, 1, 2, 3, 4, 5, 123456),
    "ts": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "tm": time(23, 59, 59, 999999),
    "js": '{"b":[1,2.50],"a":"é","f":18446744073709551615}',
    "lt": "not json",
}


def test_every_type_round_trips(my: Callable[[str], None], request_for: Any) -> None:
    my(ALL_TYPES)
    with get_source("mysql").snapshot(request_for("all_types")) as snap:
        first, empty = read_rows(snap)
        by_name = {c.name: c for c in snap.columns}
    assert first == EXPECTED_ALL_TYPES
    assert set(empty.values()) == {None}
    # MariaDB's JSON is LONGTEXT + CHECK (json_valid(...)): still JSON; a plain LONGTEXT is not
    assert (by_name["js"].bq_type, by_name["js"].source_type) == ("JSON", "json")
    assert by_name["lt"].bq_type == "STRING"
    assert (by_name["bu"].bq_type, by_name["b"].bq_type, by_name["ts"].bq_type) == (
        "NUMERIC",
        "BOOL",
        "TIMESTAMP",
    )


def test_values_bigquery_cannot_hold_become_null(my: Callable[[str], None], request_for: Any) -> None:
    my(
        """CREATE TABLE edge (id int, dt date, dtm datetime, ts timestamp NULL, tm time);
        INSERT INTO edge VALUES (1, '0000-00-00', '0000-00-00 00:00:00', 0, '-01:00:00'),
                                (2, '2024-00-10', '2024-01-00 00:00:00', NULL, '25:00:00')"""
    )
    with get_source("mysql").snapshot(request_for("edge")) as snap:
        rows = read_rows(snap)
    assert [(r["dt"], r["dtm"], r["ts"], r["tm"]) for r in rows] == [(None,) * 4] * 2


class _SessionAtPlusFive(MySQLDialect):
    """A server whose sessions start at UTC+05:00 (as a non-UTC global time_zone would make them)."""

    def connect_args(self) -> dict[str, Any]:
        return {**super().connect_args(), "init_command": "SET time_zone = '+05:00'"}


def test_timestamps_are_utc_and_naive_clock_is_the_session_zone(
    my: Callable[[str], None], request_for: Any
) -> None:
    # Given a TIMESTAMP stored as 07:00 UTC, and sessions starting at +05:00
    my(
        "CREATE TABLE t (id int, ts timestamp(6) NULL, dtm datetime(6));"
        "INSERT INTO t VALUES (1, '2024-01-01 07:00:00.000001', '2024-01-01 07:00:00')"
    )
    before = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=5)
    with SqlAlchemySource(_SessionAtPlusFive()).snapshot(request_for("t", timestamp_column="dtm")) as snap:
        naive = snap.plan_window([], lag_s=0)
        rows = read_rows(snap)
        zoned = read_rows(snap, Window("ts", datetime(2024, 1, 1, 7, 0, 0, 1, tzinfo=UTC), naive.high))
    after = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=5)
    # Then TIMESTAMP values and bounds are UTC, while a DATETIME cursor's high is the +05:00 wall clock
    assert rows[0]["ts"] == datetime(2024, 1, 1, 7, 0, 0, 1, tzinfo=UTC)
    assert [row["id"] for row in zoned] == [1]
    assert isinstance(naive.high, datetime) and before - SLACK <= naive.high <= after


# --- batches ---------------------------------------------------------------------------------------
def test_batches_respect_batch_rows_on_a_server_side_cursor(
    my: Callable[[str], None], request_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    my("CREATE TABLE t (id int);" + ";".join(f"INSERT INTO t VALUES ({i})" for i in range(25)))
    with get_source("mysql").snapshot(request_for("t")) as snap:  # the raw reader (mysql_raw)
        assert [batch.num_rows for batch in snap.iter_batches(None, 10)] == [10, 10, 5]
    monkeypatch.setattr(MySQLDialect, "fast_batches", lambda _self, _read: None)
    with get_source("mysql").snapshot(request_for("t")) as snap, spy_cursors() as seen:
        sizes = [batch.num_rows for batch in snap.iter_batches(None, 10)]
    assert sizes == [10, 10, 5]
    (streamed,) = [e for e in seen if e.stream_results]
    assert isinstance(streamed.cursor, MySQLdb.cursors.SSCursor)


def test_no_other_query_while_streaming(my: Callable[[str], None], request_for: Any) -> None:
    # MySQL allows one open result per connection: the snapshot refuses rather than failing oddly
    my("CREATE TABLE t (id int, ts datetime); INSERT INTO t VALUES (1, NULL), (2, NULL), (3, NULL)")
    with get_source("mysql").snapshot(request_for("t", timestamp_column="ts")) as snap:
        batches = snap.iter_batches(None, 1)
        assert isinstance(batches, Generator)
        next(batches)
        with pytest.raises(RuntimeError):
            snap.plan_window([], lag_s=0)
        with pytest.raises(RuntimeError):
            snap.count_rows(None)
        batches.close()  # an abandoned stream releases the connection
        assert snap.count_rows(None) == 3


# --- windows ---------------------------------------------------------------------------------------
EVENTS = """
CREATE TABLE events (id int, ts timestamp(6) NULL, dtm datetime(6), d date, n bigint);
INSERT INTO events VALUES
  (1, '2024-01-01 10:00:00', '2024-01-01 10:00:00', '2024-01-01', 1),
  (2, '2024-01-01 10:00:00.000001', '2024-01-01 10:00:00.000001', '2024-01-02', 2),
  (3, '2024-01-01 10:59:59.999999', '2024-01-01 10:59:59.999999', '2024-01-03', 3),
  (4, '2024-01-01 11:00:00', '2024-01-01 11:00:00', '2024-01-04', 4),
  (5, NULL, NULL, NULL, NULL)
"""


def _ids(snap: Any, window: Window) -> list[int]:
    rows = read_rows(snap, window, batch_rows=2)
    assert snap.count_rows(window) == len(rows)
    return sorted(row["id"] for row in rows)


def test_window_is_half_open_to_the_microsecond(my: Callable[[str], None], request_for: Any) -> None:
    my(EVENTS)
    low, high = datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 1, 11, tzinfo=UTC)
    with get_source("mysql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        assert _ids(snap, Window("ts", low, high)) == [1, 2, 3]
        assert _ids(snap, Window("dtm", low.replace(tzinfo=None), high.replace(tzinfo=None))) == [1, 2, 3]
        assert _ids(snap, Window("d", None, date(2024, 1, 3))) == [1, 2]


def test_plan_window_greatest_low_and_clock_minus_lag(my: Callable[[str], None], request_for: Any) -> None:
    my(EVENTS)
    before = datetime.now(UTC)
    with get_source("mysql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window(["2024-01-01T09:00:00Z", "2024-01-01T12:59:59.999999+02:00"], lag_s=30)
        assert window.low == datetime(2024, 1, 1, 10, 59, 59, 999999, tzinfo=UTC)
        assert _ids(snap, window) == [3, 4]
    after = datetime.now(UTC)
    assert isinstance(window.high, datetime)
    assert before - timedelta(seconds=30) - SLACK <= window.high <= after - timedelta(seconds=30)


def test_date_and_integer_cursors(my: Callable[[str], None], request_for: Any) -> None:
    my(EVENTS)
    with get_source("mysql").snapshot(request_for("events", timestamp_column="d")) as snap:
        window = snap.plan_window(["2024-01-03"], lag_s=0)
        assert window.low == date(2024, 1, 3) and isinstance(window.high, date)
        assert _ids(snap, window) == [3, 4]
    with get_source("mysql").snapshot(request_for("events", timestamp_column="n")) as snap:
        window = snap.plan_window(["2"], lag_s=0)
        assert (window.low, window.high) == (2, 5)
        assert _ids(snap, window) == [2, 3, 4]


def test_rows_committed_after_the_snapshot_opened_are_not_seen(
    my: Callable[[str], None], request_for: Any
) -> None:
    my(EVENTS)
    with get_source("mysql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window([], lag_s=0)
        my("INSERT INTO events VALUES (6, '2024-01-01 10:30:00', NULL, NULL, 6)")
        assert snap.count_rows(window) == 4 and len(read_rows(snap, window)) == 4
        assert snap.count_rows(None) == 5 and len(read_rows(snap)) == 5


# --- connection failures ---------------------------------------------------------------------------
def test_wrong_password_is_an_auth_error_without_the_password(
    mysql_admin: sa.Engine, mysql_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-S3cret!-do-not-log"
    request = make_request("mysql", connection_of(mysql_admin, database=mysql_db, password=secret), "t")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(sa.exc.OperationalError) as info:
        get_source("mysql").snapshot(request).__enter__()
    error = classify(info.value)
    assert isinstance(error, errors.SourceAuthError)
    for text in (str(info.value), repr(info.value), str(error), caplog.text):
        assert secret not in text


def test_the_snapshot_is_read_only(my: Callable[[str], None], request_for: Any) -> None:
    my("CREATE TABLE t (a int)")
    with (
        get_source("mysql").snapshot(request_for("t")) as snap,
        pytest.raises(sa.exc.DBAPIError, match="READ ONLY"),
    ):
        assert isinstance(snap, SqlAlchemyTable)
        snap._conn.execute(sa.text("INSERT INTO t VALUES (1)"))
