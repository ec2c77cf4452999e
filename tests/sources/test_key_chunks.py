"""Key-range chunks of a table (the source half of a chunked catalog run, worker/catalog_chunks.py):
the split points read in the snapshot make chunks that, read by their key ranges through the
dialect's own readers (PostgreSQL COPY, MariaDB's raw reader, SQLite's generic one), return every
row exactly once, for an integer key, a composite key with a text column and a composite key of a
timestamp, a numeric and a date (each plan read back from its stored text, as a redelivery does:
worker/sources/key_bounds.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.sources import connection_of, make_request, mysql_requests, mysql_runner
from worker.catalog_chunks import ChunkPlan, plan_of
from worker.messages import EtlRunRequest
from worker.sources import get_source, mysql_raw, pg_copy
from worker.sources.sqlalchemy_source import SqlAlchemyTable

ROWS = 103
COMPOSITE = ("CREATE TABLE t (tenant int NOT NULL, code varchar(20) NOT NULL, v int, "
             "PRIMARY KEY (tenant, code))")
SINGLE = "CREATE TABLE t (id int PRIMARY KEY, v int)"
TYPED = ("CREATE TABLE t (at {timestamp} NOT NULL, amount numeric(12, 2) NOT NULL, day date NOT NULL, "
         "v int, PRIMARY KEY (at, amount, day))")
TIMESTAMP = {"postgresql": "timestamptz(6)", "mysql": "datetime(6)"}


def typed_rows() -> list[dict[str, Any]]:
    # Keys whose text sorts unlike the value (9.50 > 10.25 as text; hours cross midnight)
    return [{"at": f"2024-03-0{1 + i % 3} {i % 24:02d}:00:00.{i:06d}",
             "amount": f"{(i * 37) % 11}.{i % 100:02d}", "day": f"2024-0{1 + i % 9}-1{i % 10}", "v": i}
            for i in range(ROWS)]


def composite_rows() -> list[tuple[int, str, int]]:
    return [(i % 4, f"c{i:04d}" if i % 2 else f"Z{i}", i) for i in range(ROWS)]


def chunked_read(request: EtlRunRequest, rows: int) -> tuple[int, list[list[int]]]:
    """(number of split points, the `v` values of each chunk) read in one snapshot."""
    with get_source(request.source_type).snapshot(request) as snap:
        assert isinstance(snap, SqlAlchemyTable)
        made = plan_of(snap.chunk_key, snap.key_split_points(rows))
        plan = ChunkPlan.from_text(made.to_text())  # as every delivery reads it: stored as JSON
        assert plan.identity == made.identity
        chunks = []
        for chunk in plan.chunks():
            low, high = (None if b is None else snap.key_bound(b) for b in (chunk.low, chunk.high))
            values = [r["v"] for b in snap.iter_key_range(low, high, 7) for r in b.to_pylist()]
            chunks.append(values)
    return len(plan.bounds), chunks


def check(request: EtlRunRequest) -> None:
    bounds, chunks = chunked_read(request, 10)
    assert sorted(v for chunk in chunks for v in chunk) == list(range(ROWS))  # each row once
    assert bounds == (ROWS - 1) // 10 and all(len(chunk) == 10 for chunk in chunks[:-1])


def test_sqlite_composite_text_key(sqlite_path: Path) -> None:
    db = sqlite3.connect(sqlite_path)
    db.execute(COMPOSITE)
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", composite_rows())
    db.commit()
    db.close()
    check(make_request("sqlite", {"database": str(sqlite_path)}, "t"))


def test_a_table_without_a_key_is_not_split(sqlite_path: Path) -> None:
    db = sqlite3.connect(sqlite_path)
    db.execute("CREATE TABLE t (v int)")
    db.close()
    with get_source("sqlite").snapshot(make_request("sqlite", {"database": str(sqlite_path)}, "t")) as snap:
        assert isinstance(snap, SqlAlchemyTable) and snap.chunk_key == ()


def spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    """Record each call of a fast reader's batch function (the chunks must be read by it)."""
    calls: list[str] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("ddl", [SINGLE, COMPOSITE, TYPED])
def test_postgresql(pg_admin: sa.Engine, pg_schema: str, ddl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
        conn.exec_driver_sql(ddl.format(timestamp=TIMESTAMP["postgresql"]))
        insert(conn, ddl)
    calls = spy(monkeypatch, pg_copy, "copy_batches")
    check(make_request("postgresql", connection_of(pg_admin), "t", schema_name=pg_schema))
    assert len(calls) == (ROWS - 1) // 10 + 1  # every chunk by COPY


@pytest.mark.parametrize("ddl", [SINGLE, COMPOSITE, TYPED])
def test_mariadb(mysql_admin: sa.Engine, mysql_db: str, ddl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run: Callable[[str], None] = mysql_runner(mysql_admin, mysql_db)
    run(ddl.format(timestamp=TIMESTAMP["mysql"]))
    values = (",".join(f"({t}, '{c}', {v})" for t, c, v in composite_rows()) if ddl == COMPOSITE
              else ",".join(f"('{r['at']}', {r['amount']}, '{r['day']}', {r['v']})" for r in typed_rows())
              if ddl == TYPED else ",".join(f"({i}, {i})" for i in range(ROWS)))
    run(f"INSERT INTO t VALUES {values}")
    build: Callable[..., EtlRunRequest] = mysql_requests(mysql_admin, mysql_db)
    calls = spy(monkeypatch, mysql_raw, "raw_batches")
    check(build("t"))
    assert len(calls) == (ROWS - 1) // 10 + 1  # every chunk by the raw reader


def insert(conn: sa.Connection, ddl: str) -> None:
    rows: list[dict[str, Any]]
    if ddl == COMPOSITE:
        rows = [{"t": t, "c": c, "v": v} for t, c, v in composite_rows()]
        conn.execute(sa.text("INSERT INTO t VALUES (:t, :c, :v)"), rows)
    elif ddl == TYPED:
        conn.execute(sa.text("INSERT INTO t VALUES (CAST(:at AS timestamptz), CAST(:amount AS numeric), "
                             "CAST(:day AS date), :v)"), typed_rows())
    else:
        conn.execute(sa.text("INSERT INTO t VALUES (:i, :i)"), [{"i": i} for i in range(ROWS)])


def parallel_read(request: EtlRunRequest, change: Callable[[], None]) -> tuple[list[int], set[datetime]]:
    """The `v` values two readers read of every chunk of 10 rows, `change` committed by another
    connection after the session's snapshot and plan, before any reader opened; the read times."""
    values: list[int] = []
    read_at: set[datetime] = set()
    with get_source(request.source_type, readers=2).snapshot(request) as snap:
        assert isinstance(snap, SqlAlchemyTable)
        plan = plan_of(snap.chunk_key, snap.key_split_points(10))
        change()
        ranges = [(chunk.low, chunk.high) for chunk in plan.chunks()]
        read: dict[int, int] = {}
        for item in snap.read_key_ranges(ranges, 7):
            read_at.add(item.read_at)
            if item.batch is None:
                assert read.get(item.index, 0) == item.rows_counted  # counted in its own snapshot
                continue
            read[item.index] = read.get(item.index, 0) + item.batch.num_rows
            values += [r["v"] for r in item.batch.to_pylist()]
    return sorted(values), read_at


def test_postgresql_parallel_key_ranges_share_the_session_snapshot(pg_admin: sa.Engine, pg_schema: str
                                                                   ) -> None:
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{pg_schema}".t (id int PRIMARY KEY, v int)')
        conn.execute(sa.text(f'INSERT INTO "{pg_schema}".t VALUES (:i, :i)'), [{"i": i} for i in range(ROWS)])

    def change() -> None:
        with pg_admin.begin() as conn:
            conn.exec_driver_sql(f'DELETE FROM "{pg_schema}".t WHERE id = 5')
            conn.exec_driver_sql(f'INSERT INTO "{pg_schema}".t VALUES (1000, 1000)')

    values, read_at = parallel_read(make_request("postgresql", connection_of(pg_admin), "t",
                                                 schema_name=pg_schema), change)
    assert values == list(range(ROWS)) and len(read_at) == 1  # one point in time


def test_mariadb_parallel_key_ranges_each_read_in_a_snapshot_of_its_own(mysql_admin: sa.Engine, mysql_db: str
                                                                       ) -> None:
    run: Callable[[str], None] = mysql_runner(mysql_admin, mysql_db)
    run(SINGLE)
    run("INSERT INTO t VALUES " + ",".join(f"({i}, {i})" for i in range(ROWS)))

    def change() -> None:
        run("DELETE FROM t WHERE id = 5")
        run("INSERT INTO t VALUES (1000, 1000)")

    values, read_at = parallel_read(mysql_requests(mysql_admin, mysql_db)("t"), change)
    # Each range as of its own read: the change is seen, each row still exactly once
    assert values == [v for v in range(ROWS) if v != 5] + [1000]
    assert len(read_at) > 1  # a snapshot per range (times a microsecond apart may coincide)


@pytest.mark.parametrize("readers", [1, 2])
def test_each_key_range_reports_its_own_values_loaded_as_null(pg_admin: sa.Engine, pg_schema: str,
                                                               readers: int) -> None:
    # Given 30 rows whose amount is NaN (BigQuery NUMERIC cannot hold it) where id % 4 == 0
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{pg_schema}".t (id int PRIMARY KEY, amount numeric(12, 2))')
        conn.execute(sa.text(f'INSERT INTO "{pg_schema}".t VALUES (:i, CAST(:a AS numeric))'),
                     [{"i": i, "a": "NaN" if i % 4 == 0 else str(i)} for i in range(30)])
    request = make_request("postgresql", connection_of(pg_admin), "t", schema_name=pg_schema)
    with get_source("postgresql", readers=readers).snapshot(request) as snap:
        assert isinstance(snap, SqlAlchemyTable)
        plan = plan_of(snap.chunk_key, snap.key_split_points(10))
        ranges = [(chunk.low, chunk.high) for chunk in plan.chunks()]
        # When the chunks of 10 rows are read
        ends = {item.index: dict(item.nulled) for item in snap.read_key_ranges(ranges, 7)
                if item.batch is None}
        # Then each range's end counts its own (what a resumed run adds up per finished chunk), and
        # the table's counts are their sum
        assert ends == {0: {"amount": 3}, 1: {"amount": 2}, 2: {"amount": 3}}
        assert snap.values_nulled == {"amount": 8}
