"""Primary-key ranges of a MariaDB table, each read on its own connection and snapshot
(worker/sources/mysql_ranges.py): every row in exactly one range, the same values as the session's
own read."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.sources import mysql_requests, mysql_runner
from worker import errors
from worker.sources import get_source
from worker.sources.arrays import NulledValues
from worker.sources.mysql_ranges import KeyRange, key_ranges, range_batches
from worker.sources.sqlalchemy_source import SqlAlchemyTable

# ids 1..30 and 100..110 (a gap), a NULL note, a zero date NULLed, JSON: the raw reader's columns.
_TABLE = """
CREATE TABLE t (id bigint PRIMARY KEY, note varchar(20), d date, doc json, amount decimal(8, 2));
INSERT INTO t SELECT seq, IF(MOD(seq, 7) = 0, NULL, CONCAT('n', seq)),
  IF(seq = 5, '0000-00-00', '2024-01-02'), JSON_OBJECT('k', seq), seq / 4 FROM seq_1_to_30;
INSERT INTO t SELECT seq, 'late', '2024-02-03', '[1, 2]', 1.5 FROM seq_100_to_110
"""


@pytest.fixture
def table(my: Callable[[str], None], request_for: Any) -> Any:
    my(_TABLE)
    return request_for("t")


@pytest.fixture
def my(mysql_admin: Any, mysql_db: str) -> Callable[[str], None]:
    return mysql_runner(mysql_admin, mysql_db)


@pytest.fixture
def request_for(mysql_admin: Any, mysql_db: str) -> Callable[..., Any]:
    return mysql_requests(mysql_admin, mysql_db)


def _rows_of(snap: SqlAlchemyTable, key_range: KeyRange, batch_rows: int = 4) -> list[dict[str, Any]]:
    read = snap.read_plan(None, batch_rows)
    rows: list[dict[str, Any]] = []
    for batch in range_batches(read.conn.engine, read, key_range):
        assert batch.schema == read.schema and batch.num_rows <= batch_rows
        rows.extend(batch.to_pylist())
    return rows


def _snapshot(request: Any) -> Any:
    return get_source("mysql").snapshot(request)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 50])
def test_every_row_in_exactly_one_range_with_the_sessions_values(table: Any, count: int) -> None:
    with _snapshot(table) as snap:
        whole = [row for batch in snap.iter_batches(None, 7) for row in batch.to_pylist()]
        ranges = key_ranges(snap.read_plan(None, 4).conn, snap.sa_table, count)
        assert ranges[0].low is None and ranges[-1].high is None
        assert all(a.high == b.low for a, b in itertools.pairwise(ranges))
        parts = [_rows_of(snap, r) for r in ranges]
    ids = [row["id"] for part in parts for row in part]
    assert sorted(ids) == sorted(row["id"] for row in whole) and len(ids) == len(set(ids)) == 41
    assert sorted((row for part in parts for row in part), key=lambda r: r["id"]) == sorted(
        whole, key=lambda r: r["id"])


def test_low_bound_inclusive_high_exclusive(table: Any) -> None:
    with _snapshot(table) as snap:
        assert [r["id"] for r in _rows_of(snap, KeyRange(10, 20))] == list(range(10, 20))
        assert [r["id"] for r in _rows_of(snap, KeyRange(None, 3))] == [1, 2]
        assert [r["id"] for r in _rows_of(snap, KeyRange(108, None))] == [108, 109, 110]
        assert _rows_of(snap, KeyRange(31, 100)) == []


def test_a_range_counts_its_nulled_values_in_its_own_tally(table: Any) -> None:
    with _snapshot(table) as snap:
        read = snap.read_plan(None, 100)
        tally = NulledValues()
        rows = list(range_batches(read.conn.engine, read, KeyRange(1, 10), tally))
        assert sum(b.num_rows for b in rows) == 9 and tally.counts == {"d": 1}
        assert snap.values_nulled == {}


def test_a_range_sees_its_own_snapshot_not_later_commits(
        table: Any, my: Callable[[str], None]) -> None:
    with _snapshot(table) as snap:
        read = snap.read_plan(None, 2)
        batches = range_batches(read.conn.engine, read, KeyRange(1, None))
        first = next(batches)  # the range's snapshot is open now
        my("INSERT INTO t (id, note) VALUES (500, 'after')")
        ids = [*first.column("id").to_pylist(), *(i for b in batches for i in b.column("id").to_pylist())]
    assert 500 not in ids and len(ids) == 41


@pytest.mark.parametrize("ddl, reason", [
    ("CREATE TABLE t (a int, b int, PRIMARY KEY (a, b))", "single-column primary key, found 2"),
    ("CREATE TABLE t (a int)", "single-column primary key, found 0"),
    ("CREATE TABLE t (a varchar(8) PRIMARY KEY)", "integer primary key"),
])
def test_keys_a_range_cannot_split_are_refused(
        my: Callable[[str], None], request_for: Any, ddl: str, reason: str) -> None:
    my(ddl)
    with _snapshot(request_for("t")) as snap:
        read = snap.read_plan(None, 10)
        with pytest.raises(errors.ConfigurationError, match=reason):
            key_ranges(read.conn, snap.sa_table, 2)
        with pytest.raises(errors.ConfigurationError, match=reason):
            list(range_batches(read.conn.engine, read, KeyRange(1, 2)))


def test_a_table_the_raw_reader_cannot_carry_is_refused(my: Callable[[str], None], request_for: Any) -> None:
    my("CREATE TABLE t (id int PRIMARY KEY, flags bit(8))")
    with _snapshot(request_for("t")) as snap:
        read = snap.read_plan(None, 10)
        with pytest.raises(errors.ConfigurationError, match="raw reader cannot carry"):
            list(range_batches(read.conn.engine, read, KeyRange()))
