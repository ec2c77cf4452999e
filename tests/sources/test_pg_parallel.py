"""Parallel COPY readers of one PostgreSQL table sharing the session's snapshot (worker/sources/
pg_parallel.py), against a real PostgreSQL 15: every row once, exactly the snapshot's rows whatever
commits meanwhile, values as the one-connection read gives them; one connection where there is no
heap to split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.sources import connection_of, make_request, read_rows
from worker.messages import EtlRunRequest
from worker.sources import get_source
from worker.sources.pg_parallel import block_ranges
from worker.window import Window

ROWS = 5000
T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def pg(pg_admin: sa.Engine, pg_schema: str) -> Callable[[str], None]:
    def run(sql: str) -> None:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
            conn.exec_driver_sql(sql.replace("%", "%%"))  # no parameters: % is literal
            conn.commit()

    return run


@pytest.fixture
def orders(pg: Callable[[str], None], pg_admin: sa.Engine, pg_schema: str) -> Callable[..., EtlRunRequest]:
    """`orders`: ROWS rows over many heap blocks (a wide note), some values nulled on the way."""
    pg("CREATE TABLE orders (id bigint PRIMARY KEY, note text, amount numeric(12, 2), ts timestamptz, "
       "d date)")
    pg(f"INSERT INTO orders SELECT g, repeat('x', 200) || g, g / 100.0, "
       f"timestamptz '2024-05-01 00:00:00+00' + g * interval '1 minute', "
       f"CASE WHEN g % 1000 = 0 THEN 'infinity'::date ELSE date '2024-01-01' + g % 300 END "
       f"FROM generate_series(1, {ROWS}) AS g")
    pg("ANALYZE orders")

    def build(**fields: Any) -> EtlRunRequest:
        return make_request("postgresql", connection_of(pg_admin), "orders", schema_name=pg_schema, **fields)

    return build


def test_block_ranges_cover_the_heap_once_the_last_open_ended() -> None:
    assert block_ranges(10, 3) == [(0, 3), (3, 6), (6, None)]
    assert block_ranges(2, 4) == [(0, 1), (1, None)]  # never more readers than blocks
    assert block_ranges(0, 4) == [(0, None)]


@pytest.mark.parametrize("readers", [2, 4])
def test_parallel_readers_return_every_row_once_with_the_same_values(
    orders: Callable[..., EtlRunRequest], readers: int, caplog: pytest.LogCaptureFixture
) -> None:
    with get_source("postgresql").snapshot(orders()) as snap:
        one = read_rows(snap)
        nulled_one = snap.values_nulled
    with caplog.at_level(logging.INFO, logger="worker.sources.pg_parallel"), \
            get_source("postgresql", readers=readers).snapshot(orders()) as snap:
        many = read_rows(snap, batch_rows=700)
        assert snap.values_nulled == nulled_one == {"d": ROWS // 1000}
    assert f"with {readers} COPY readers" in caplog.text
    assert len(many) == ROWS
    assert sorted(many, key=lambda r: r["id"]) == sorted(one, key=lambda r: r["id"])


def test_every_reader_sees_the_sessions_snapshot_not_what_commits_meanwhile(
    orders: Callable[..., EtlRunRequest], pg: Callable[[str], None]
) -> None:
    with get_source("postgresql", readers=3).snapshot(orders(timestamp_column="ts")) as snap:
        expected = snap.count_rows(None)
        # Given a writer that, after the snapshot opened, inserts, deletes and updates rows
        pg(f"INSERT INTO orders SELECT g, 'late', 1, now(), current_date FROM generate_series({ROWS + 1}, "
           f"{ROWS + 500}) AS g")
        pg("DELETE FROM orders WHERE id <= 300")
        pg("UPDATE orders SET note = 'changed' WHERE id BETWEEN 1000 AND 1999")
        pg("VACUUM orders")
        # When the parallel readers read the table and a window of it
        rows = read_rows(snap)
        window = Window("ts", T0 + timedelta(minutes=100), T0 + timedelta(minutes=2100))
        windowed = read_rows(snap, window)
    # Then they saw exactly the snapshot's rows, each once
    assert expected == ROWS and sorted(r["id"] for r in rows) == list(range(1, ROWS + 1))
    assert not any(r["note"] in ("late", "changed") for r in rows)
    assert sorted(r["id"] for r in windowed) == list(range(100, 2100))


def test_a_view_is_read_by_the_one_connection(
    orders: Callable[..., EtlRunRequest], pg: Callable[[str], None], pg_admin: sa.Engine, pg_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pg("CREATE VIEW paid AS SELECT id, note FROM orders WHERE id % 2 = 0")
    request = make_request("postgresql", connection_of(pg_admin), "paid", schema_name=pg_schema)
    with caplog.at_level(logging.INFO, logger="worker.sources.pg_parallel"), \
            get_source("postgresql", readers=4).snapshot(request) as snap:
        rows = read_rows(snap)
    assert sorted(r["id"] for r in rows) == list(range(2, ROWS + 1, 2))
    assert "COPY readers" not in caplog.text


def test_a_small_window_on_an_indexed_cursor_is_read_by_the_one_connection(
    orders: Callable[..., EtlRunRequest], pg: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an index on the cursor: PostgreSQL reads a small window through it, not by block ranges
    pg("CREATE INDEX orders_ts ON orders (ts)")
    pg("ANALYZE orders")
    window = Window("ts", T0 + timedelta(minutes=100), T0 + timedelta(minutes=150))
    with caplog.at_level(logging.INFO, logger="worker.sources.pg_parallel"), \
            get_source("postgresql", readers=3).snapshot(orders(timestamp_column="ts")) as snap:
        small = read_rows(snap, window)
        whole = read_rows(snap)
    assert sorted(r["id"] for r in small) == list(range(100, 150))
    assert "one connection: the window is read by its index" in caplog.text
    assert len(whole) == ROWS and "with 3 COPY readers" in caplog.text  # the whole table: in parallel
