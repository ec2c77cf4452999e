"""Decoding of pgoutput's logical replication messages, protocol version 1 (text values).

One message per row of `pg_logical_slot_peek_binary_changes(...)`, as PostgreSQL documents them
("Logical Replication Message Formats"): Begin, Commit, Origin, Relation, Type, Insert, Update,
Delete, Truncate (and Message, which a publication only sends when asked). Pure: bytes in,
frozen dataclasses out; a message this module does not know is a `DecodeError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# PostgreSQL's timestamps count microseconds from 2000-01-01 00:00 UTC.
PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


class DecodeError(ValueError):
    """Bytes that are not a pgoutput protocol-1 message."""


class _Unchanged:
    """A TOASTed value the update did not change, so pgoutput did not send it ('u')."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = bytes | None | _Unchanged  # a column's text (server encoding), NULL, or not sent
Values = tuple[Value, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    key: bool  # part of the replica identity


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str  # '' for pg_catalog
    name: str
    replica_identity: str  # relreplident: d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True)
class Insert:
    oid: int
    new: Values


@dataclass(frozen=True)
class Update:
    oid: int
    old: Values | None  # the old key ('K', when the key changed) or row ('O', REPLICA IDENTITY FULL)
    old_kind: str | None
    new: Values


@dataclass(frozen=True)
class Delete:
    oid: int
    old: Values  # the key ('K') or, REPLICA IDENTITY FULL, the whole row ('O')
    old_kind: str


@dataclass(frozen=True)
class Truncate:
    oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Other:
    """Origin, Type and logical decoding messages: nothing a table's changes depend on."""

    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Other


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise DecodeError(f"message ends at byte {len(self.data)}, {size} more expected at {self.pos}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def byte(self) -> str:
        return chr(self.take("!B"))

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise DecodeError("unterminated string")
        text = self.data[self.pos:end].decode()
        self.pos = end + 1
        return text

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise DecodeError(f"value of {size} bytes overruns the message")
        value = self.data[self.pos:self.pos + size]
        self.pos += size
        return value

    def time(self) -> datetime:
        return PG_EPOCH + timedelta(microseconds=self.take("!q"))

    def values(self) -> Values:
        return tuple(self._value() for _ in range(self.take("!H")))

    def _value(self) -> Value:
        kind = self.byte()
        if kind == "n":
            return None
        if kind == "u":
            return UNCHANGED
        if kind == "t":
            return self.raw(self.take("!i"))
        raise DecodeError(f"tuple value of kind {kind!r} (binary values are not requested)")


def decode(data: bytes) -> Message:
    """One pgoutput message."""
    if not data:
        raise DecodeError("empty message")
    reader = _Reader(bytes(data))
    kind = reader.byte()
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown pgoutput message {kind!r}")
    return decoder(reader)


def _begin(r: _Reader) -> Begin:
    return Begin(final_lsn=r.take("!Q"), commit_time=r.time(), xid=r.take("!I"))


def _commit(r: _Reader) -> Commit:
    r.take("!B")  # flags, unused
    return Commit(commit_lsn=r.take("!Q"), end_lsn=r.take("!Q"), commit_time=r.time())


def _relation(r: _Reader) -> Relation:
    oid, namespace, name, identity = r.take("!I"), r.string(), r.string(), r.byte()
    columns = []
    for _ in range(r.take("!H")):
        flags = r.take("!B")
        columns.append(RelationColumn(name=r.string(), type_oid=r.take("!I"), type_modifier=r.take("!i"),
                                      key=bool(flags & 1)))
    return Relation(oid, namespace, name, identity, tuple(columns))


def _insert(r: _Reader) -> Insert:
    oid = r.take("!I")
    _expect(r, "N")
    return Insert(oid, r.values())


def _update(r: _Reader) -> Update:
    oid = r.take("!I")
    kind = r.byte()
    old, old_kind = None, None
    if kind in ("K", "O"):
        old, old_kind = r.values(), kind
        kind = r.byte()
    if kind != "N":
        raise DecodeError(f"update without its new tuple (got {kind!r})")
    return Update(oid, old, old_kind, r.values())


def _delete(r: _Reader) -> Delete:
    oid = r.take("!I")
    kind = r.byte()
    if kind not in ("K", "O"):
        raise DecodeError(f"delete without its old key or row (got {kind!r})")
    return Delete(oid, r.values(), kind)


def _truncate(r: _Reader) -> Truncate:
    count, options = r.take("!I"), r.take("!B")
    return Truncate(tuple(r.take("!I") for _ in range(count)), bool(options & 1), bool(options & 2))


def _expect(r: _Reader, kind: str) -> None:
    got = r.byte()
    if got != kind:
        raise DecodeError(f"expected tuple {kind!r}, got {got!r}")


def _other(kind: str) -> Callable[[_Reader], Other]:
    return lambda _reader: Other(kind)


_DECODERS: dict[str, Callable[[_Reader], Message]] = {
    "B": _begin, "C": _commit, "R": _relation, "I": _insert, "U": _update, "D": _delete, "T": _truncate,
    "O": _other("origin"), "Y": _other("type"), "M": _other("message"),
}
