"""From decoded pgoutput messages to the changes of one table that a run stages (pure).

A run reads the slot's transactions in commit order and keeps those whose commit LSN lies in its
range `[start, end)`: `start` is the position the ledger recorded with the last commit (anything
before it is already applied, e.g. redelivered after a crash between the BigQuery commit and the
slot's advance), `end` the position fixed when the run began (so a run is bounded while writers go
on). Every kept change gets the next sequence number: the MERGE keeps the last one per key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Generic, Literal, TypeVar

from worker.cdc import pgoutput as pg
from worker.errors import CdcSetupError, UnsupportedChangeError

Op = Literal["I", "U", "D", "T"]
INSERT: Final = "I"
UPDATE: Final = "U"
DELETE: Final = "D"
TRUNCATE: Final = "T"


V = TypeVar("V")


@dataclass(frozen=True)
class Change(Generic[V]):
    """One change to stage: the values it sets (source column → a value: pgoutput's text or NULL,
    a binlog row event's Python value) and the columns whose destination value it keeps (a
    TOASTed value pgoutput did not resend, or a column the row's change did not have yet)."""

    seq: int
    op: Op
    values: Mapping[str, V]
    unchanged: tuple[str, ...] = ()


PgChange = Change[bytes | None]


@dataclass(frozen=True)
class TableShape:
    """The table as the run reflected it: what a change must be read against."""

    namespace: str  # the schema (pgoutput names pg_catalog '')
    name: str
    columns: tuple[str, ...]  # the loaded source columns
    key: tuple[str, ...]  # the columns identifying a row (a subset of `columns`)
    key_types: Mapping[str, int] = field(default_factory=dict)  # PostgreSQL: key column → type oid now


@dataclass
class Counts:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    truncates: int = 0
    transactions: int = 0  # committed transactions in range, with or without a change of the table
    skipped: int = 0  # transactions before `start`: already applied by an earlier run
    newest_commit: datetime | None = None  # commit time of the newest transaction applied
    kept: set[str] = field(default_factory=set)  # columns some change did not send

    def report(self) -> dict[str, int]:
        return {"inserts": self.inserts, "updates": self.updates, "deletes": self.deletes,
                "truncates": self.truncates}


@dataclass
class ChangeCollector:
    """Feed it every message of the slot in order; it yields the table's changes to stage."""

    shape: TableShape
    start: int  # inclusive commit LSN
    end: int  # exclusive commit LSN
    counts: Counts = field(default_factory=Counts)
    _relations: dict[int, pg.Relation] = field(default_factory=dict)
    _in_range: bool = False
    _seq: int = 0

    def feed(self, message: pg.Message) -> Iterator[PgChange]:
        if isinstance(message, pg.Begin):
            self._begin(message)
        elif isinstance(message, pg.Relation):
            self._relation(message)
        elif isinstance(message, pg.Commit):
            self._in_range = False
        elif self._in_range:
            yield from self._change(message)

    def _begin(self, begin: pg.Begin) -> None:
        self._in_range = self.start <= begin.final_lsn < self.end
        if begin.final_lsn < self.start:
            self.counts.skipped += 1
        elif self._in_range:
            self.counts.transactions += 1
            self.counts.newest_commit = begin.commit_time

    def _relation(self, relation: pg.Relation) -> None:
        if (relation.namespace or "pg_catalog", relation.name) != (self.shape.namespace, self.shape.name):
            self._relations.pop(relation.oid, None)
            return
        by_name = {col.name: col for col in relation.columns}
        for name in self.shape.key:
            column = by_name.get(name)
            if column is None:
                raise UnsupportedChangeError(
                    f"key column {name!r} of {self._table()} is missing from the change log's relation "
                    "(dropped or renamed): reload the table (docs/cdc.md, 'Starting over')")
            if column.type_oid != self.shape.key_types[name]:
                raise UnsupportedChangeError(
                    f"key column {name!r} of {self._table()} changed type in the change log (type oid "
                    f"{column.type_oid}, now {self.shape.key_types[name]}): a CDC run cannot re-key the "
                    "destination; reload the table (docs/cdc.md, 'Starting over')")
        self._relations[relation.oid] = relation

    def _change(self, message: pg.Message) -> Iterator[PgChange]:
        if isinstance(message, pg.Truncate):
            if any(oid in self._relations for oid in message.oids):
                self.counts.truncates += 1
                yield self._next(TRUNCATE, {})
            return
        relation = self._relations.get(getattr(message, "oid", -1))
        if relation is None:  # another table of the publication
            return
        if isinstance(message, pg.Insert):
            self.counts.inserts += 1
            yield self._row(INSERT, relation, message.new)
        elif isinstance(message, pg.Update):
            self.counts.updates += 1
            yield from self._update(relation, message)
        elif isinstance(message, pg.Delete):
            self.counts.deletes += 1
            yield self._deleted(relation, message.old)

    def _update(self, relation: pg.Relation, update: pg.Update) -> Iterator[PgChange]:
        new = update.new
        if update.old_kind == "O" and update.old is not None:  # REPLICA IDENTITY FULL: the old row
            new = tuple(o if n is pg.UNCHANGED else n for o, n in zip(update.old, new, strict=True))
        change = self._row(UPDATE, relation, new)
        if update.old is not None:
            old_key = self._key_of(relation, update.old)
            if old_key != {name: change.values.get(name) for name in self.shape.key}:
                # The key changed: the old key's row goes; the new key's row must be whole.
                yield self._next(DELETE, old_key)
                if change.unchanged:
                    raise UnsupportedChangeError(
                        f"an update of {self._table()} changed the primary key of a row whose TOASTed "
                        f"values {list(change.unchanged)} were not resent: set REPLICA IDENTITY FULL on the "
                        "table so that the old row is logged, then reload it (docs/cdc.md)")
                change = Change(self._next_seq(), UPDATE, change.values)
        yield change

    def _row(self, op: Op, relation: pg.Relation, values: pg.Values) -> PgChange:
        by_name = dict(zip((col.name for col in relation.columns), values, strict=True))
        kept: dict[str, bytes | None] = {}
        unchanged = []
        for name in self.shape.columns:
            value = by_name.get(name, pg.UNCHANGED)  # absent: a column added since this relation
            if isinstance(value, pg._Unchanged):
                unchanged.append(name)
            else:
                kept[name] = value
        missing_key = [name for name in self.shape.key if kept.get(name) is None]
        if missing_key:
            raise UnsupportedChangeError(f"a change of {self._table()} has no value for key {missing_key}")
        self.counts.kept.update(unchanged)
        return self._next(op, kept, tuple(unchanged))

    def _deleted(self, relation: pg.Relation, old: pg.Values) -> PgChange:
        return self._next(DELETE, self._key_of(relation, old))

    def _key_of(self, relation: pg.Relation, values: pg.Values) -> dict[str, bytes | None]:
        by_name = dict(zip((col.name for col in relation.columns), values, strict=True))
        key: dict[str, bytes | None] = {}
        for name in self.shape.key:
            value = by_name.get(name)
            key[name] = value if isinstance(value, bytes) else None
        if any(value is None for value in key.values()):
            raise CdcSetupError(
                f"the change log identifies rows of {self._table()} by other columns than the key "
                f"{list(self.shape.key)}: make the replica identity that key (its primary key, REPLICA "
                "IDENTITY USING INDEX) or FULL (docs/cdc.md)")
        return key

    def _next(self, op: Op, values: Mapping[str, bytes | None], unchanged: Sequence[str] = ()) -> PgChange:
        return Change(self._next_seq(), op, values, tuple(unchanged))  # not the alias: its call is slow

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _table(self) -> str:
        return f"{self.shape.namespace}.{self.shape.name}"
