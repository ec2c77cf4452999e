"""The pgoutput decoder and the change collector, on messages built byte by byte as PostgreSQL's
"Logical Replication Message Formats" describes them (protocol version 1)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from worker.cdc import pgoutput as pg
from worker.cdc.changes import ChangeCollector, TableShape
from worker.cdc.lsn import format_lsn, parse_lsn
from worker.cdc.meta import default_name, unchanged_text
from worker.errors import CdcSetupError, ConfigurationError, UnsupportedChangeError

OID, INT8, TEXT = 16_400, 20, 25
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def micros(moment: datetime) -> int:
    return (moment - pg.PG_EPOCH) // timedelta(microseconds=1)


def begin(lsn: int, xid: int = 7) -> bytes:
    return b"B" + struct.pack("!QqI", lsn, micros(AT), xid)


def commit(lsn: int) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, lsn, lsn + 40, micros(AT))


def relation(columns: list[tuple[str, int, bool]], oid: int = OID, name: str = "items",
             namespace: str = "public") -> bytes:
    body = struct.pack("!I", oid) + namespace.encode() + b"\0" + name.encode() + b"\0d"
    body += struct.pack("!H", len(columns))
    for col, type_oid, key in columns:
        body += struct.pack("!B", int(key)) + col.encode() + b"\0" + struct.pack("!Ii", type_oid, -1)
    return b"R" + body


def tuple_data(*values: bytes | str | None) -> bytes:
    body = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            body += b"n"
        elif value == "u":
            body += b"u"
        else:
            assert isinstance(value, bytes)
            body += b"t" + struct.pack("!i", len(value)) + value
    return body


def insert(*values: bytes | str | None, oid: int = OID) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + tuple_data(*values)


def update(*values: bytes | str | None, old: tuple[bytes | str | None, ...] | None = None,
           kind: bytes = b"K") -> bytes:
    head = b"U" + struct.pack("!I", OID)
    if old is not None:
        head += kind + tuple_data(*old)
    return head + b"N" + tuple_data(*values)


def delete(*values: bytes | str | None, kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack("!I", OID) + kind + tuple_data(*values)


def truncate(*oids: int) -> bytes:
    return b"T" + struct.pack("!IB", len(oids), 0) + b"".join(struct.pack("!I", oid) for oid in oids)


COLUMNS = [("id", INT8, True), ("name", TEXT, False), ("body", TEXT, False)]
SHAPE = TableShape("public", "items", ("id", "name", "body"), ("id",), {"id": INT8})


def collect(*messages: bytes, start: int = 0, end: int = 1_000, shape: TableShape = SHAPE
            ) -> tuple[list[tuple[int, str, dict[str, bytes | None], tuple[str, ...]]], ChangeCollector]:
    collector = ChangeCollector(shape, start, end)
    changes = [change for data in messages for change in collector.feed(pg.decode(data))]
    return [(c.seq, c.op, dict(c.values), c.unchanged) for c in changes], collector


# --- decoding ------------------------------------------------------------------------------------
def test_every_message_kind_decodes_to_its_fields() -> None:
    assert pg.decode(begin(0x16_B374D848, 9)) == pg.Begin(0x16_B374D848, AT, 9)
    assert pg.decode(commit(100)) == pg.Commit(100, 140, AT)
    rel = pg.decode(relation(COLUMNS))
    assert isinstance(rel, pg.Relation) and rel.columns[0] == pg.RelationColumn("id", INT8, -1, True)
    assert pg.decode(insert(b"1", None, b"x")) == pg.Insert(OID, (b"1", None, b"x"))
    assert pg.decode(update(b"1", b"a", "u")) == pg.Update(OID, None, None, (b"1", b"a", pg.UNCHANGED))
    keyed = pg.decode(update(b"2", b"a", b"b", old=(b"1", None, None)))
    assert isinstance(keyed, pg.Update) and keyed.old == (b"1", None, None)
    assert pg.decode(delete(b"1", None, None)) == pg.Delete(OID, (b"1", None, None), "K")
    assert pg.decode(truncate(OID, 5)) == pg.Truncate((OID, 5), False, False)
    assert pg.decode(b"O" + struct.pack("!Q", 1) + b"origin\0") == pg.Other("origin")


@pytest.mark.parametrize("data", [b"", b"Z", b"B\x00", insert(b"1")[:-1], b"I" + struct.pack("!I", 1) + b"X"])
def test_bytes_that_are_no_message_are_a_decode_error(data: bytes) -> None:
    with pytest.raises(pg.DecodeError):
        pg.decode(data)


def test_lsn_text_and_integer_round_trip() -> None:
    assert parse_lsn("16/B374D848") == 0x16_B374D848 and format_lsn(0x16_B374D848) == "16/B374D848"
    assert format_lsn(parse_lsn("0/0")) == "0/0"
    with pytest.raises(ConfigurationError):
        parse_lsn("16-B374")


# --- collecting ----------------------------------------------------------------------------------
def test_changes_of_transactions_in_range_are_numbered_in_commit_order() -> None:
    got, collector = collect(relation(COLUMNS), begin(10), insert(b"1", b"a", b"x"),
                             update(b"1", b"b", b"y"), commit(10), begin(20), delete(b"1", None, None),
                             commit(20))
    assert got == [(1, "I", {"id": b"1", "name": b"a", "body": b"x"}, ()),
                   (2, "U", {"id": b"1", "name": b"b", "body": b"y"}, ()),
                   (3, "D", {"id": b"1"}, ())]
    assert collector.counts.report() == {"inserts": 1, "updates": 1, "deletes": 1, "truncates": 0}
    assert collector.counts.transactions == 2


def test_transactions_before_start_are_skipped_and_those_at_or_after_end_excluded() -> None:
    # Given the ledger's position 20 (applied) and an end fixed at 30
    got, collector = collect(relation(COLUMNS), begin(10), insert(b"1", b"a", b"x"), commit(10),
                             begin(20), insert(b"2", b"b", b"y"), commit(20),
                             begin(30), insert(b"3", b"c", b"z"), commit(30), start=20, end=30)
    # Then only the transaction committed at 20 is staged; the one at 10 was applied before
    assert [values["id"] for _, _, values, _ in got] == [b"2"]
    assert collector.counts.skipped == 1 and collector.counts.transactions == 1


def test_an_unchanged_toasted_value_is_listed_as_kept_not_sent_as_null() -> None:
    got, collector = collect(relation(COLUMNS), begin(10), update(b"1", b"b", "u"), commit(10))
    assert got == [(1, "U", {"id": b"1", "name": b"b"}, ("body",))]
    assert collector.counts.kept == {"body"}
    assert unchanged_text(("body",)) == ",body,"


def test_with_replica_identity_full_the_old_row_fills_an_unchanged_value() -> None:
    got, _ = collect(relation(COLUMNS), begin(10), update(b"1", b"b", "u", old=(b"1", b"a", b"x"), kind=b"O"),
                     commit(10))
    assert got == [(1, "U", {"id": b"1", "name": b"b", "body": b"x"}, ())]


def test_an_update_of_the_key_deletes_the_old_key_and_writes_the_new_one() -> None:
    moved = update(b"2", b"a", b"x", old=(b"1", None, None))
    got, _ = collect(relation(COLUMNS), begin(10), moved, commit(10))
    assert [(op, values["id"]) for _, op, values, _ in got] == [("D", b"1"), ("U", b"2")]


def test_a_key_update_that_leaves_a_toasted_value_unsent_is_refused() -> None:
    with pytest.raises(UnsupportedChangeError, match="REPLICA IDENTITY FULL"):
        collect(relation(COLUMNS), begin(10), update(b"2", b"a", "u", old=(b"1", None, None)), commit(10))


def test_a_column_the_relation_did_not_have_yet_is_kept() -> None:
    older = [("id", INT8, True), ("name", TEXT, False)]
    got, _ = collect(relation(older), begin(10), insert(b"1", b"a"), commit(10))
    assert got == [(1, "I", {"id": b"1", "name": b"a"}, ("body",))]


def test_a_truncate_of_the_table_is_a_change_and_other_tables_are_ignored() -> None:
    got, _ = collect(relation(COLUMNS), relation(COLUMNS, oid=99, name="other"), begin(10),
                     insert(b"5", b"o", b"o", oid=99), truncate(99), truncate(OID, 99), commit(10))
    assert [(seq, op) for seq, op, _, _ in got] == [(1, "T")]


def test_a_key_column_that_changed_type_is_refused() -> None:
    changed = [("id", TEXT, True), ("name", TEXT, False), ("body", TEXT, False)]
    with pytest.raises(UnsupportedChangeError, match="changed type"):
        collect(begin(10), relation(changed), insert(b"x", b"a", b"b"), commit(10))


def test_a_delete_identified_by_other_columns_than_the_key_is_a_setup_error() -> None:
    shape = TableShape("public", "items", ("id", "name", "body"), ("id", "name"), {"id": INT8, "name": TEXT})
    with pytest.raises(CdcSetupError, match="replica identity"):
        collect(relation(COLUMNS), begin(10), delete(b"1", None, None), commit(10), shape=shape)


def test_default_names_are_stable_safe_and_distinct() -> None:
    assert default_name(12, "orders") == "etl_12_orders"
    assert default_name(12, "Orders") != default_name(12, "orders")
    long = default_name(12, "x" * 80)
    assert len(long) <= 63 and long == default_name(12, "x" * 80)
