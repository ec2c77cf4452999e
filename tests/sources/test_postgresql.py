"""The PostgreSQL source against a real PostgreSQL 15 (a fresh schema per test)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from tests.sources import connection_of, make_request, read_rows, spy_cursors
from worker import errors
from worker.classify import classify
from worker.messages import EtlRunRequest
from worker.sources import get_source
from worker.sources.postgresql import PostgresDialect
from worker.sources.sqlalchemy_source import INTEGER_FLOOR, SqlAlchemyTable
from worker.window import Window

SLACK = timedelta(seconds=1)  # clock reads on either side of the snapshot's own


@pytest.fixture
def pg(pg_admin: sa.Engine, pg_schema: str) -> Callable[[str], None]:
    """Run SQL in the test's schema (search_path set), autocommitted."""

    def run(sql: str) -> None:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
            conn.exec_driver_sql(sql)
            conn.exec_driver_sql("SET search_path TO DEFAULT")

    return run


@pytest.fixture
def request_for(pg_admin: sa.Engine, pg_schema: str) -> Callable[..., EtlRunRequest]:
    def build(table: str, **fields: Any) -> EtlRunRequest:
        return make_request("postgresql", connection_of(pg_admin), table, schema_name=pg_schema, **fields)

    return build


# --- reflection ------------------------------------------------------------------------------------
def test_selected_columns_in_request_order(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t (a int, b text, c date)")
    with get_source("postgresql").snapshot(request_for("t", selected_columns=["c", "a"])) as snap:
        assert [(c.name, c.source_type) for c in snap.columns] == [("c", "date"), ("a", "integer")]
    with get_source("postgresql").snapshot(request_for("t")) as snap:
        assert [c.name for c in snap.columns] == ["a", "b", "c"]


def test_missing_table_is_named(request_for: Any, pg_schema: str) -> None:
    with pytest.raises(errors.SourceSchemaError, match=f"{pg_schema}.nope"):
        get_source("postgresql").snapshot(request_for("nope")).__enter__()


def test_missing_selected_and_timestamp_columns_are_named(
    pg: Callable[[str], None], request_for: Any
) -> None:
    pg("CREATE TABLE t (a int, ts timestamptz)")
    with pytest.raises(errors.SourceSchemaError, match="'ghost'"):
        get_source("postgresql").snapshot(request_for("t", selected_columns=["a", "ghost"])).__enter__()
    with pytest.raises(errors.SourceSchemaError, match="'when'"):
        get_source("postgresql").snapshot(request_for("t", timestamp_column="when")).__enter__()


@pytest.mark.filterwarnings("ignore:Did not recognize type")
def test_unsupported_types_name_column_and_type(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t (a int, tz timetz, p point)")
    with get_source("postgresql").snapshot(request_for("t", selected_columns=["a", "tz"])) as snap:
        assert [c.bq_type for c in snap.columns] == ["INT64", "STRING"]  # timetz: text with its offset
    with (
        pytest.warns(sa.exc.SAWarning, match="point"),
        pytest.raises(errors.UnsupportedTypeError, match=r"'p'.*unrecognised"),
    ):
        get_source("postgresql").snapshot(request_for("t", selected_columns=["p"])).__enter__()
    with get_source("postgresql").snapshot(request_for("t", selected_columns=["a"])) as snap:
        assert [c.name for c in snap.columns] == ["a"]  # the others are not needed: fine


def test_cursor_column_must_be_time_date_or_integer(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t (a int, s text)")
    with pytest.raises(errors.ConfigurationError, match="'s'"):
        get_source("postgresql").snapshot(request_for("t", timestamp_column="s")).__enter__()


# --- values ----------------------------------------------------------------------------------------
ALL_TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE all_types (
  i2 smallint, i4 integer, i8 bigint, n numeric(12, 3), nb numeric(40, 20), nu numeric,
  r real, d double precision, b boolean, t text, vc varchar(10), ch char(3), by bytea,
  dt date, tm time(6), ts timestamp(6), tz timestamptz(6), js json, jb jsonb, u uuid,
  ip inet, cd cidr, iv interval, mo mood, m money, ai integer[], at text[], an numeric(10, 2)[]
);
INSERT INTO all_types VALUES (
  -32768, 2147483647, -9223372036854775808, 123456789.123,
  '12345678901234567890.12345678901234567890', '0.0000001', 1.5, 1.0000000000000002, true,
  'héllo 🎉', 'abc', 'ab', '\\x00ff', '2024-02-29', '23:59:59.999999',
  '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02',
  '{"b": [1, 2.50], "a": "é"}', '{"big": 18446744073709551615, "f": 1.10}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1', '10.0.0.0/8', '1 year 2 mons 3 days 04:05:06',
  'happy', 12.5, '{1,2,3}', '{"a","b c"}', '{1.5,2.25}'
);
INSERT INTO all_types (i4) VALUES (NULL);
"""

EXPECTED_ALL_TYPES = {
    "i2": -32768,
    "i4": 2147483647,
    "i8": -9223372036854775808,
    "n": Decimal("123456789.123"),
    "nb": Decimal("12345678901234567890.12345678901234567890"),
    "nu": "0.0000001",
    "r": 1.5,
    "d": 1.0000000000000002,
    "b": True,
    "t": "héllo 🎉",
    "vc": "abc",
    "ch": "ab ",
    "by": b"\x00\xff",
    "dt": date(2024, 2, 29),
    "tm": time(23, 59, 59, 999999),
    "ts": datetime(2024, 1, 2, 3, 4, 5, 123456),
    "tz": datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC),
    "js": '{"b":[1,2.50],"a":"é"}',
    "jb": '{"f":1.10,"big":18446744073709551615}',  # jsonb orders keys
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ip": "192.168.0.1",
    "cd": "10.0.0.0/8",
    "iv": "1 year 2 mons 3 days 04:05:06",
    "mo": "happy",
    "m": Decimal("12.5"),
    "ai": [1, 2, 3],
    "at": ["a", "b c"],
    "an": [Decimal("1.5"), Decimal("2.25")],
}


def test_every_type_round_trips(pg: Callable[[str], None], request_for: Any) -> None:
    pg(ALL_TYPES_DDL)
    with get_source("postgresql").snapshot(request_for("all_types")) as snap:
        first, empty = read_rows(snap)
        by_name = {c.name: c for c in snap.columns}
    assert first == EXPECTED_ALL_TYPES
    assert set(empty.values()) == {None}
    assert by_name["jb"].bq_type == "JSON" and by_name["ai"].repeated
    assert by_name["tz"].arrow_type == pa.timestamp("us", tz="UTC")


def test_values_bigquery_cannot_hold_become_null(pg: Callable[[str], None], request_for: Any) -> None:
    pg(
        """CREATE TABLE edge (id int, d date, ts timestamp, tz timestamptz, tm time, n numeric(10, 2),
                              nu numeric, ai int[]);
        INSERT INTO edge VALUES
          (1, 'infinity', 'infinity', '-infinity', '24:00:00', 'NaN', 'NaN', '{1,NULL}'),
          (2, '10000-01-01', '10000-01-01', '10000-01-01 00:00+00', NULL, NULL, 'Infinity', '{{1,2},{3,4}}'),
          (3, '0044-03-15 BC', '0044-03-15 12:00 BC', '0044-03-15 12:00+00 BC',
           NULL, NULL, '-Infinity', '{}')"""
    )
    with get_source("postgresql").snapshot(request_for("edge")) as snap:
        rows = sorted(read_rows(snap), key=lambda row: row["id"])
    for row in rows:
        assert (row["d"], row["ts"], row["tz"], row["tm"], row["n"]) == (None,) * 5
    assert [row["nu"] for row in rows] == ["NaN", "Infinity", "-Infinity"]
    assert [row["ai"] for row in rows] == [None, None, []]


# --- batches ---------------------------------------------------------------------------------------
def test_batches_respect_batch_rows_on_a_server_side_cursor(
    pg: Callable[[str], None], request_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The generic path (COPY has its own tests in tests/perf_paths)
    monkeypatch.setattr(PostgresDialect, "fast_batches", lambda _self, _read: None)
    pg("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 25) g")
    with get_source("postgresql").snapshot(request_for("t")) as snap, spy_cursors() as seen:
        sizes = [batch.num_rows for batch in snap.iter_batches(None, 10)]
    assert sizes == [10, 10, 5]
    (streamed,) = [e for e in seen if e.stream_results]
    assert streamed.statement.lstrip().startswith("SELECT") and "count" not in streamed.statement
    assert streamed.cursor.name  # a psycopg2 named cursor: server-side


def test_no_other_query_while_streaming(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5) g")
    with get_source("postgresql").snapshot(request_for("t")) as snap:
        batches = snap.iter_batches(None, 2)
        next(batches)
        with pytest.raises(RuntimeError, match="finish iter_batches"):
            snap.count_rows(None)
        assert sum(b.num_rows for b in batches) == 3  # the stream itself continues
        assert snap.count_rows(None) == 5


# --- windows ---------------------------------------------------------------------------------------
EVENTS = """
CREATE TABLE events (id int, ts timestamptz(6), tsn timestamp(6), d date);
INSERT INTO events VALUES
  (1, '2024-01-01 10:00:00+00', '2024-01-01 10:00:00', '2024-01-01'),
  (2, '2024-01-01 10:00:00.000001+00', '2024-01-01 10:00:00.000001', '2024-01-02'),
  (3, '2024-01-01 10:59:59.999999+00', '2024-01-01 10:59:59.999999', '2024-01-03'),
  (4, '2024-01-01 11:00:00+00', '2024-01-01 11:00:00', '2024-01-04'),
  (5, NULL, NULL, NULL);
"""


def _ids(snap: Any, window: Window) -> list[int]:
    rows = read_rows(snap, window, batch_rows=2)
    assert snap.count_rows(window) == len(rows)
    return sorted(row["id"] for row in rows)


def test_window_is_half_open_to_the_microsecond(pg: Callable[[str], None], request_for: Any) -> None:
    pg(EVENTS)
    low, high = datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 1, 11, tzinfo=UTC)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        assert _ids(snap, Window("ts", low, high)) == [1, 2, 3]
        assert _ids(snap, Window("ts", None, high)) == [1, 2, 3]  # no low bound; NULL never read
        naive = Window("tsn", low.replace(tzinfo=None), high.replace(tzinfo=None))
        assert _ids(snap, naive) == [1, 2, 3]
        assert _ids(snap, Window("d", date(2024, 1, 2), date(2024, 1, 4))) == [2, 3]


def test_plan_window_greatest_low_and_clock_minus_lag(pg: Callable[[str], None], request_for: Any) -> None:
    pg(EVENTS)
    lows = ["2024-01-01T09:00:00Z", "2024-01-01 12:00:00.000001+02:00", "2024-01-01T10:00:00", ""]
    before = datetime.now(UTC)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window(lows, lag_s=90)
        assert window.column == "ts"
        assert window.low == datetime(2024, 1, 1, 10, 0, 0, 1, tzinfo=UTC)
        assert _ids(snap, window) == [2, 3, 4]  # 2 is exactly at the (inclusive) low
    after = datetime.now(UTC)
    assert isinstance(window.high, datetime) and window.high.tzinfo is not None
    assert before - timedelta(seconds=90) - SLACK <= window.high <= after - timedelta(seconds=90)


def test_plan_window_without_lows_reads_from_the_beginning(
    pg: Callable[[str], None], request_for: Any
) -> None:
    pg(EVENTS)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window([], lag_s=0)
        assert window.low is None and _ids(snap, window) == [1, 2, 3, 4]


def test_future_low_gives_an_empty_window(pg: Callable[[str], None], request_for: Any) -> None:
    pg(EVENTS)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window(["2999-01-01T00:00:00+00:00"], lag_s=0)
        assert window.high == window.low == datetime(2999, 1, 1, tzinfo=UTC)
        assert snap.count_rows(window) == 0 and read_rows(snap, window) == []


def test_naive_cursor_uses_the_session_wall_clock(
    pg: Callable[[str], None], request_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a session whose default zone is UTC+05:30 (libpq reads PGTZ)
    pg(EVENTS)
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    offset = timedelta(hours=5, minutes=30)
    before = datetime.now(UTC).replace(tzinfo=None) + offset
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="tsn")) as snap:
        window = snap.plan_window(["2024-01-01T10:30:00+02:00"], lag_s=0)
        zoned = read_rows(snap, Window("ts", None, datetime(2024, 1, 1, 10, 0, 0, 1, tzinfo=UTC)))
    after = datetime.now(UTC).replace(tzinfo=None) + offset
    # Then high is the local wall clock (naive), the low's offset is converted to UTC
    assert window.low == datetime(2024, 1, 1, 8, 30)
    assert isinstance(window.high, datetime) and window.high.tzinfo is None
    assert before - SLACK <= window.high <= after
    # And zoned values still arrive as UTC instants
    assert zoned[0]["ts"] == datetime(2024, 1, 1, 10, tzinfo=UTC)


def test_date_cursor_high_is_the_date_of_clock_minus_lag(pg: Callable[[str], None], request_for: Any) -> None:
    pg(EVENTS)
    before = datetime.now(UTC)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="d")) as snap:
        window = snap.plan_window(["2024-01-02"], lag_s=2 * 86400)
        assert _ids(snap, window) == [2, 3, 4]
    after = datetime.now(UTC)
    assert window.low == date(2024, 1, 2)
    assert window.high in {(before - timedelta(days=2)).date(), (after - timedelta(days=2)).date()}


def test_integer_cursor_high_is_max_plus_one(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g; CREATE TABLE empty (id bigint)")
    with get_source("postgresql").snapshot(request_for("t", timestamp_column="id")) as snap:
        window = snap.plan_window(["4", "2"], lag_s=3600)
        assert (window.low, window.high) == (4, 11)
        assert _ids(snap, window) == [4, 5, 6, 7, 8, 9, 10]
    with get_source("postgresql").snapshot(request_for("empty", timestamp_column="id")) as snap:
        assert snap.plan_window([], lag_s=0) == Window("id", None, INTEGER_FLOOR)
        assert snap.plan_window(["7"], lag_s=0) == Window("id", 7, 7)


# --- snapshot --------------------------------------------------------------------------------------
def test_rows_committed_after_the_snapshot_opened_are_not_seen(
    pg: Callable[[str], None], request_for: Any
) -> None:
    pg(EVENTS)
    with get_source("postgresql").snapshot(request_for("events", timestamp_column="ts")) as snap:
        window = snap.plan_window([], lag_s=0)
        # When another connection commits rows inside the window
        pg("INSERT INTO events VALUES (6, '2024-01-01 10:30:00+00', NULL, NULL)")
        # Then neither the count nor the batches see them, with or without a window
        assert snap.count_rows(window) == 4 and len(read_rows(snap, window)) == 4
        assert snap.count_rows(None) == 5 and len(read_rows(snap)) == 5


# --- connection failures ---------------------------------------------------------------------------
def test_unknown_role_is_an_auth_error_without_the_password(
    pg_admin: sa.Engine, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-S3cret!-do-not-log"
    connection = connection_of(pg_admin, username="nobody_here", password=secret)
    request = make_request("postgresql", connection, "t", schema_name=pg_schema)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(sa.exc.OperationalError) as info:
        get_source("postgresql").snapshot(request).__enter__()
    error = classify(info.value)
    assert isinstance(error, errors.SourceAuthError)
    for text in (str(info.value), repr(info.value), str(error), caplog.text):
        assert secret not in text


def test_unreachable_host_is_a_connection_error(pg_admin: sa.Engine) -> None:
    request = make_request("postgresql", connection_of(pg_admin, port=1, password="x"), "t")
    with pytest.raises(sa.exc.OperationalError) as info:
        get_source("postgresql").snapshot(request).__enter__()
    assert isinstance(classify(info.value), errors.SourceConnectionError)


def test_the_snapshot_is_read_only(pg: Callable[[str], None], request_for: Any) -> None:
    pg("CREATE TABLE t (a int)")
    request = request_for("t")
    insert = sa.text(f'INSERT INTO "{request.schema_name}".t VALUES (1)')
    with (
        get_source("postgresql").snapshot(request) as snap,
        pytest.raises(sa.exc.DBAPIError, match="read-only transaction"),
    ):
        assert isinstance(snap, SqlAlchemyTable)
        snap._conn.execute(insert)
