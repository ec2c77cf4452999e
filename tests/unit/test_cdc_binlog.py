"""Pure logic of MySQL/MariaDB binlog CDC (worker/cdc/binlog.py): positions, server ids, TRUNCATE
statements, and which transactions a run keeps (only by where their closing event ends)."""

from __future__ import annotations

from worker.cdc.binlog import (
    Begin,
    BinlogCollector,
    BinlogPosition,
    Commit,
    Rows,
    Statement,
    TableShape,
    decode_position,
    default_server_id,
    storable,
    truncated_table,
)

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
    return [Begin("0-1-1"), *rows, Commit(BinlogPosition("binlog.000001", end), 1_700_000_000)]


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
