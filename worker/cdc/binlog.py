"""From MySQL/MariaDB binlog events to the changes of one table that a run stages (pure).

Positions. A binlog position is (file, offset); the ledger keeps it as one integer, the file's
sequence number in the high 32 bits and the offset in the low ones (so `binlog.000012` offset 4321
prints as `C/10E1`, like a PostgreSQL LSN, and the ledger's overlap guard compares integers). Only
positions at transaction boundaries are ever recorded: the consistent snapshot's, `SHOW MASTER
STATUS`'s, and the end of a transaction's closing event (Xid, COMMIT, or the DDL itself) — never a
row event's (python-mysql-replication issue #618: on MariaDB those are not the event's end).

A run keeps the transactions whose closing event ends in `(start, end]`: one that ended at or
before `start` is already applied (the stream may hand back events from before the requested
position, #618), one that ends after `end` committed after the run began. A transaction's events
are contiguous in the binlog and both bounds are transaction ends, so where its first event (GTID
or BEGIN) ends tells the same: the collector decides there and streams the transaction's changes
as they come (memory stays bounded whatever a transaction's size), and checks the closing event
agrees.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from worker.cdc.changes import DELETE, INSERT, TRUNCATE, UPDATE, Change, Counts, Op, TableShape
from worker.errors import ConfigurationError, UnsupportedChangeError

FILE_SHIFT: Final = 32
_SEQUENCE = re.compile(r"^(?P<base>.*)\.(?P<number>\d+)$")
# server_ids the worker derives: above the small ids servers are usually given, below 2**32.
SERVER_ID_LOW: Final = 1_000_000_000
SERVER_ID_SPAN: Final = 2**32 - 1 - SERVER_ID_LOW


@dataclass(frozen=True, order=True)
class BinlogPosition:
    file: str
    offset: int

    @property
    def sequence(self) -> int:
        return file_sequence(self.file)

    def encoded(self) -> int:
        return (self.sequence << FILE_SHIFT) | self.offset

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}"


def file_sequence(name: str) -> int:
    return int(_file_name(name).group("number"))


def file_base(name: str) -> str:
    return _file_name(name).group("base")


def _file_name(name: str) -> re.Match[str]:
    found = _SEQUENCE.match(name)
    if not found:
        raise ConfigurationError(f"not a binlog file name: {name!r}")
    return found


def decode_position(value: int, base: str, digits: int = 6) -> BinlogPosition:
    """The ledger's integer back to (file, offset); `base` and `digits` as the server names its
    files now (`binlog`, 6: `binlog.000012`)."""
    sequence, offset = value >> FILE_SHIFT, value & 0xFFFFFFFF
    return BinlogPosition(f"{base}.{sequence:0{digits}d}", offset)


def default_server_id(data_source_id: int, dest_table: str) -> int:
    """Stable for data source + table, spread over [1e9, 2**32 - 1): two tables (or two workers)
    reading the same server as the same replica id would disconnect each other."""
    digest = hashlib.sha256(f"{data_source_id}/{dest_table}".encode()).digest()
    return SERVER_ID_LOW + int.from_bytes(digest[:8], "big") % SERVER_ID_SPAN


_TRUNCATE = re.compile(
    r"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:(?P<schema>`(?:[^`]|``)+`|\w+)\s*\.\s*)?(?P<table>`(?:[^`]|``)+`|\w+)",
    re.IGNORECASE)


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def truncated_table(query: str, default_schema: str) -> tuple[str, str] | None:
    """(schema, table) a TRUNCATE statement empties (logged as a statement even in ROW format)."""
    found = _TRUNCATE.match(query)
    if not found:
        return None
    schema = _unquote(found.group("schema")) if found.group("schema") else default_schema
    return schema, _unquote(found.group("table"))


# A binlog change carries the library's Python values, made storable again by `storable`; a
# column the row event did not have (added to the table after the change) is `unchanged`.
RowChange = Change[object]


# --- events, as the reader hands them over --------------------------------------------------------
@dataclass(frozen=True)
class Begin:
    """A transaction's GTID event (MariaDB: domain-server-sequence), or BEGIN, and where it ends."""

    gtid: str | None
    position: BinlogPosition


@dataclass(frozen=True)
class Rows:
    schema: str
    table: str
    op: Op  # I, U, D
    rows: Sequence[Mapping[str, Any]]  # the library's row dicts (values / before_values, after_values)


@dataclass(frozen=True)
class Statement:
    schema: str
    query: str


@dataclass(frozen=True)
class Commit:
    """The transaction's closing event (Xid, COMMIT, or a DDL statement itself) and where it ends."""

    position: BinlogPosition
    timestamp: int  # the event's header time (seconds): when the source committed


Event = Begin | Rows | Statement | Commit


@dataclass
class BinlogCollector:
    """Feed it the stream's events in order; it yields the table's changes of the transactions
    that end in (start, end], in commit order. A transaction is kept or skipped whole, decided by
    where its first event ends (see the module's docstring); a DDL statement (its own
    transaction, which MySQL opens with no event the reader sees) by where it ends."""

    shape: TableShape
    start: BinlogPosition
    end: BinlogPosition
    counts: Counts = field(default_factory=Counts)
    gtid: str | None = None  # of the last transaction applied
    _open: Begin | None = None  # the transaction being read
    _statement: bool = False  # the DDL being read truncates the table
    _seq: int = 0

    def done(self, position: BinlogPosition) -> bool:
        return position >= self.end

    def feed(self, event: Event) -> Iterator[RowChange]:
        if isinstance(event, Begin):  # MySQL: a GTID event, then BEGIN (which opens it)
            gtid = event.gtid or (self._open.gtid if self._open is not None else None)
            self._open, self._statement = Begin(gtid, event.position), False
        elif isinstance(event, Rows):
            if (event.schema, event.table) == (self.shape.namespace, self.shape.name):
                yield from self._rows(event)
        elif isinstance(event, Statement):
            self._statement = truncated_table(event.query, event.schema) == (self.shape.namespace,
                                                                            self.shape.name)
        else:
            yield from self._commit(event)

    def _in_range(self, position: BinlogPosition) -> bool:
        return self.start < position <= self.end

    def _rows(self, rows: Rows) -> Iterator[RowChange]:
        if self._open is None:
            raise UnsupportedChangeError(
                f"a row event of {self.shape.namespace}.{self.shape.name} outside a transaction: the binlog "
                "was not read from a transaction boundary")
        if self._in_range(self._open.position):
            for row in rows.rows:
                yield from self._changes(rows.op, row)

    def _commit(self, commit: Commit) -> Iterator[RowChange]:
        opened, truncates = self._open, self._statement
        self._open, self._statement = None, False
        kept = self._in_range(commit.position)
        if opened is not None and self._in_range(opened.position) != kept:
            raise UnsupportedChangeError(
                f"a transaction of the binlog begins at {opened.position} and ends at {commit.position}, "
                f"across a bound of ({self.start}, {self.end}]: positions were not transaction ends")
        if commit.position <= self.start:
            self.counts.skipped += 1
        elif kept:
            self.counts.transactions += 1
            self.gtid = opened.gtid if opened is not None and opened.gtid else self.gtid
            self.counts.newest_commit = datetime.fromtimestamp(commit.timestamp, UTC)
            if truncates:
                yield from self._changes(TRUNCATE, {})

    def _changes(self, op: Op, row: Mapping[str, Any]) -> Iterator[RowChange]:
        if op == TRUNCATE:
            self.counts.truncates += 1
            yield self._next(TRUNCATE, {})
        elif op == INSERT:
            self.counts.inserts += 1
            yield self._row(INSERT, row["values"])
        elif op == DELETE:
            self.counts.deletes += 1
            yield self._next(DELETE, self._key_of(row["values"]))
        else:
            self.counts.updates += 1
            old_key, change = self._key_of(row["before_values"]), self._row(UPDATE, row["after_values"])
            if old_key != {name: change.values.get(name) for name in self.shape.key}:
                yield self._next(DELETE, old_key)  # the key changed: the old key's row goes
                change = Change(self._next_seq(), UPDATE, change.values, change.unchanged)
            yield change

    def _row(self, op: Op, values: Mapping[str, Any]) -> RowChange:
        self._check_columns(values)
        kept = {name: values[name] for name in self.shape.columns if name in values}
        unchanged = tuple(name for name in self.shape.columns if name not in values)
        self.counts.kept.update(unchanged)
        return self._next(op, kept, unchanged)

    def _key_of(self, values: Mapping[str, Any]) -> dict[str, object]:
        self._check_columns(values)
        return {name: values[name] for name in self.shape.key}

    def _check_columns(self, values: Mapping[str, Any]) -> None:
        missing = [name for name in self.shape.key if name not in values]
        if missing:
            raise UnsupportedChangeError(
                f"a row event of {self.shape.namespace}.{self.shape.name} has no key column {missing} "
                "(dropped or renamed since): reload the table (docs/cdc.md, 'Starting over')")
        if any(values[name] is None for name in self.shape.key):
            raise UnsupportedChangeError(
                f"a change of {self.shape.namespace}.{self.shape.name} has no value for key "
                f"{list(self.shape.key)}")

    def _next(self, op: Op, values: Mapping[str, object], unchanged: Sequence[str] = ()) -> RowChange:
        return Change(self._next_seq(), op, values, tuple(unchanged))  # not the alias: its call is slow

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


# --- values ---------------------------------------------------------------------------------------
def storable(value: object) -> object:
    """A row event's value as the driver can write it back into a column of the same type:
    python-mysql-replication hands SET as a Python set and MySQL's binary JSON as a structure
    (BIT, a string of 0s and 1s, is `bit_value`'s: only the column type tells it from text);
    everything else (ints, Decimal, str, bytes, naive UTC datetimes
    for TIMESTAMP, timedelta for TIME) is written as it comes."""
    if isinstance(value, set | frozenset):
        return ",".join(sorted(str(member) for member in value))  # MySQL stores it in definition order
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return value


def bit_value(value: object) -> object:
    """BIT(n): the library's '0101' → its integer."""
    return int(value, 2) if isinstance(value, str) else value


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    return str(value) if isinstance(value, Decimal) else repr(value)
