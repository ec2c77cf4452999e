"""Pure logic of MySQL/MariaDB binlog CDC (worker/cdc/binlog.py): positions, server ids, TRUNCATE
statements, and which transactions a run keeps (only by where their closing event ends)."""

from __future__ import annotations

import pymysql
import pytest

from worker.cdc import binlog_stream
from worker.cdc.binlog import (
    Begin,
    BinlogCollector,
    BinlogPosition,
    Commit,
    Rows,
    Statement,
    decode_position,
    default_server_id,
    storable,
    truncated_table,
)
from worker.cdc.changes import TableShape
from worker.errors import SourceConnectionError, UnsupportedChangeError

SHAPE = TableShape("test", "items", ("id", "name"), ("id",))


def test_a_position_round_trips_through_the_ledger_integer() -> None:
    position = BinlogPosition("binlog.000012", 4321)
    assert position.encoded() == (12 << 32) | 4321
    assert decode_position(position.encoded(), "binlog") == position
    assert BinlogPosition("binlog.000002", 4) > BinlogPosition("binlog.000001", 99_999)


def test_the_default_server_id_is_stable_and_in_range() -> None:
    first = default_server_id(12, "orders")
    assert first == default_server_id(12, "orders") != default_server_id(12, "items")
    assert 1_000_000_000 <= first < 2**32


def test_truncate_statements_name_their_table() -> None:
    assert truncated_table("TRUNCATE items", "test") == ("test", "items")
    assert truncated_table("truncate table `other`.`it``s`", "test") == ("other", "it`s")
    assert truncated_table("DELETE FROM items", "test") is None


def test_storable_values() -> None:
    assert storable({"b", "a"}) == "a,b"
    assert storable({"k": [1]}) == '{"k": [1]}'
    assert storable(5) == 5


def _transaction(end: int, *rows: Rows | Statement) -> list[Begin | Rows | Statement | Commit]:
    begin = BinlogPosition("binlog.000001", end - 10)  # where its GTID event ends
    return [Begin("0-1-1", begin), *rows, Commit(BinlogPosition("binlog.000001", end), 1_700_000_000)]


def test_only_transactions_ending_in_the_range_are_kept_whole() -> None:
    start, end = BinlogPosition("binlog.000001", 100), BinlogPosition("binlog.000001", 300)
    collector = BinlogCollector(SHAPE, start, end)
    insert = Rows("test", "items", "I", [{"values": {"id": 1, "name": "a"}}])
    update = Rows("test", "items", "U", [{"before_values": {"id": 1, "name": "a"},
                                          "after_values": {"id": 2, "name": "b"}}])
    other = Rows("test", "other", "I", [{"values": {"id": 9}}])
    events = [*_transaction(100, insert), *_transaction(200, insert, other, update),
              *_transaction(250, Statement("test", "TRUNCATE items")), *_transaction(400, insert)]
    changes = [change for event in events for change in collector.feed(event)]
    # In order (a key-changing update: the old key's delete, then the new row); numbers only grow.
    assert [(c.op, dict(c.values)) for c in changes] == [
        ("I", {"id": 1, "name": "a"}), ("D", {"id": 1}), ("U", {"id": 2, "name": "b"}), ("T", {})]
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert (collector.counts.skipped, collector.counts.transactions) == (1, 2)
    assert collector.counts.report() == {"inserts": 1, "updates": 1, "deletes": 0, "truncates": 1}


def test_the_stream_gets_one_connection_and_a_reconnect_fails_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-mysql-replication reconnects by itself after 2006/2013 (#367): a second stream
    # connection must fail the run instead, so that the redelivery reads again from the ledger
    opened: list[dict[str, object]] = []
    monkeypatch.setattr(pymysql, "connect", lambda **settings: opened.append(settings))
    factory = binlog_stream._OneStream()
    factory(host="h")
    factory(host="h", db="information_schema")  # the library's ctl connection
    with pytest.raises(SourceConnectionError, match="dropped"):
        factory(host="h")
    assert len(opened) == 2


def test_the_librarys_nones_become_the_values_they_were() -> None:
    row = {"values": {"id": 1, "d": None, "s": None, "n": None, "gone": None},
           "none_sources": {"d": "out of date range", "s": "empty set", "n": "null", "gone": "cols bitmap"}}
    assert binlog_stream._row(row)["values"] == {"id": 1, "d": binlog_stream.ZERO_DATE, "s": "", "n": None}


def test_a_transaction_streams_its_changes_before_its_commit_arrives() -> None:
    # A transaction is kept by where its first event ends (both bounds are transaction ends), so
    # its changes are not held in memory until its commit
    start, end = BinlogPosition("binlog.000001", 100), BinlogPosition("binlog.000001", 10_000)
    collector = BinlogCollector(SHAPE, start, end)
    assert not list(collector.feed(Begin("0-1-2", BinlogPosition("binlog.000001", 150))))
    insert = Rows("test", "items", "I", [{"values": {"id": n, "name": "a"}} for n in range(3)])
    assert [c.values["id"] for c in collector.feed(insert)] == [0, 1, 2]
    assert not list(collector.feed(Commit(BinlogPosition("binlog.000001", 900), 1_700_000_000)))
    assert collector.counts.transactions == 1 and collector.gtid == "0-1-2"


def test_a_transaction_across_a_bound_is_refused() -> None:
    start, end = BinlogPosition("binlog.000001", 100), BinlogPosition("binlog.000001", 300)
    collector = BinlogCollector(SHAPE, start, end)
    list(collector.feed(Begin(None, BinlogPosition("binlog.000001", 250))))
    with pytest.raises(UnsupportedChangeError, match="not transaction ends"):
        list(collector.feed(Commit(BinlogPosition("binlog.000001", 400), 1_700_000_000)))


def test_a_row_event_outside_a_transaction_is_refused() -> None:
    start, end = BinlogPosition("binlog.000001", 4), BinlogPosition("binlog.000001", 300)
    collector = BinlogCollector(SHAPE, start, end)
    with pytest.raises(UnsupportedChangeError, match="outside a transaction"):
        list(collector.feed(Rows("test", "items", "I", [{"values": {"id": 1}}])))
