"""A PostgreSQL CDC session (`load_type: cdc`): the table from the slot's exported snapshot (a
first run), or its changes from the slot up to an end position fixed now (every later run).

Changes come from `pg_logical_slot_peek_binary_changes(slot, end, ...)` on a server-side cursor
(the server materialises the decoded range in a tuplestore that spills to disk; we fetch it in
slices), decoded by `worker.cdc.pgoutput`. Peeking, not getting: the slot moves only once the
BigQuery commit has recorded the new position (`confirm`). We chose the SQL interface over the
streaming replication protocol because a run is bounded and synchronous: one query with an
upper bound, under the same connection, error handling and timeouts as every other read, with
no feedback loop, keepalives or replication-connection state to get right; the replication
connection is used only to create the slot with an exported snapshot.

pgoutput sends each value as PostgreSQL's text. Instead of a second type system, a slice of
changes is copied (COPY FROM, text format) into a temporary table with the source columns' own
types on a second connection, and read back through the ordinary readers (COPY TO, the generic
path): a change's values become exactly what a snapshot read of the same row gives.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from worker.cdc import meta, pgoutput
from worker.cdc import postgres as cdc_pg
from worker.cdc.changes import ChangeCollector, PgChange, TableShape
from worker.cdc.lsn import format_lsn, parse_lsn
from worker.errors import SourceSchemaError
from worker.messages import EtlRunRequest, TableSpec
from worker.sources.base import LogRange
from worker.sources.cdc_table import TEMP_TABLE, ChangeBuffer, ChangeTable, checked_base
from worker.sources.dialect import Clock, SqlDialect, driver_errors
from worker.sources.sqlalchemy_source import SqlAlchemySession, SqlAlchemyTable

log = logging.getLogger(__name__)
PEEK_FETCH_ROWS = 2000  # messages per FETCH from the peek cursor
_PEEK_SQL = ("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
             "'proto_version', '1', 'publication_names', %s)")


@dataclass(frozen=True)
class _Found:
    """What the checks found, before the run decides between following the slot and starting over."""

    names: cdc_pg.CdcNames
    facts: cdc_pg.TableFacts
    slot: cdc_pg.SlotState | None
    server_version: int

    def follows(self, committed: int | None) -> bool:
        """The slot still holds every change after the ledger's position (it is not past it)."""
        slot = self.slot
        return (committed is not None and slot is not None and not slot.lost
                and (slot.confirmed_flush or 0) <= committed)


@contextlib.contextmanager
def cdc_session(dialect: SqlDialect, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                log_from: str | None) -> Iterator[CdcSession]:
    """Check the server, then fix the end position (the slot follows the ledger), or start over
    from a new slot's exported snapshot (a first run, or a slot lost, dropped or moved on).
    `log_from`: the position the ledger recorded with this table's last cdc commit; a request with
    `cdc_resnapshot` starts over whatever the slot holds."""
    found = _check(dialect, conn, request, spec)
    committed = parse_lsn(log_from) if log_from else None
    if found.follows(committed) and not spec.cdc_resnapshot:
        assert committed is not None
        yield _follow(dialect, conn, request, found, committed)
        return
    if committed is not None and not spec.cdc_resnapshot:
        state = "missing" if found.slot is None else "moved on or lost"
        log.warning("replication slot %s no longer holds the changes after %s (%s): loading %s again",
                    found.names.slot, format_lsn(committed), state, spec.source_table_name)
    with _start_over(dialect, conn, request, found, committed) as session:
        yield session


def _check(dialect: SqlDialect, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec) -> _Found:
    names = cdc_pg.names_of(request, spec)
    with driver_errors(dialect):
        cdc_pg.readiness(conn, request.schema_name, spec, names, spec.primary_key or ()).raise_if_any()
        facts = cdc_pg.table_facts(conn, request.schema_name, spec.source_table_name)
        assert facts is not None  # readiness found it
        found = _Found(names, facts, cdc_pg.slot_state(conn, names.slot), cdc_pg.server_version(conn))
        conn.rollback()
    return found


def _follow(dialect: SqlDialect, conn: sa.Connection, request: EtlRunRequest, found: _Found,
            committed: int) -> CdcSession:
    """A later run: [the ledger's position, now)."""
    names = found.names
    with driver_errors(dialect):
        cdc_pg.advance_slot(conn, names.slot, committed)  # a crash after the commit left it behind
        end = max(cdc_pg.current_lsn(conn), committed)
        clock = _clock(conn)
    return CdcSession(conn, dialect, clock, request,
                      LogRange(False, committed, end, names.slot, names.publication), found.facts, found.slot)


@contextlib.contextmanager
def _start_over(dialect: SqlDialect, conn: sa.Connection, request: EtlRunRequest, found: _Found,
                committed: int | None) -> Iterator[CdcSession]:
    """A first run: publication, then a new slot exporting its snapshot, read on `conn` while the
    replication connection stays open."""
    names = found.names
    with driver_errors(dialect):
        if found.slot is not None:
            cdc_pg.drop_slot(conn, names.slot)
        cdc_pg.ensure_publication(conn, names.publication, found.facts)
    with driver_errors(dialect), cdc_pg.exported_slot(conn.engine.url, names.slot,
                                                      found.server_version) as exported:
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        conn.execute(sa.text("SET TRANSACTION SNAPSHOT :snapshot"), {"snapshot": exported.snapshot_name})
        clock = _clock(conn)
        yield CdcSession(conn, dialect, clock, request,
                         LogRange(True, committed, exported.consistent_point, names.slot, names.publication),
                         found.facts, None)


def _clock(conn: sa.Connection) -> Clock:
    zoned, local = conn.execute(sa.text("SELECT now(), LOCALTIMESTAMP")).one()
    conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
    return Clock(zoned=zoned.astimezone(UTC), local=local)


class CdcSession(SqlAlchemySession):
    """The session of a cdc request: its one table reads the snapshot or the changes."""

    def __init__(self, conn: sa.Connection, dialect: SqlDialect, clock: Clock, request: EtlRunRequest,
                 log_range: LogRange, facts: cdc_pg.TableFacts, slot: cdc_pg.SlotState | None) -> None:
        super().__init__(conn, dialect, clock, request.schema_name, strict=request.strict_types)
        self.log_range = log_range
        self.facts = facts
        self.slot = slot

    def table(self, spec: TableSpec) -> CdcTable:  # type: ignore[override]
        return CdcTable(self, checked_base(super().table(spec)))


class CdcTable(ChangeTable):
    """A cdc table read from the slot: its changes peeked up to the range's end."""

    def __init__(self, session: CdcSession, base: SqlAlchemyTable) -> None:
        super().__init__(base, session.log_range)
        self._session = session

    # --- ChangeLog ------------------------------------------------------------------------------
    def _log_report(self) -> dict[str, Any]:
        slot = self._session.slot
        return {
            "slot": self.log_range.slot,
            "publication": self.log_range.publication,
            "retained_wal_bytes": slot.retained_wal_bytes if slot else None,
        }

    def confirm(self, position: int) -> None:
        """After the BigQuery commit recorded `position`: let the slot release the WAL before it."""
        with driver_errors(self._session.dialect), self._session.conn.engine.connect() as conn:
            cdc_pg.advance_slot(conn, self.log_range.slot, position)

    # --- reading --------------------------------------------------------------------------------
    def _change_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        collector = ChangeCollector(self._shape(), self.log_range.start or 0, self.log_range.end, self.counts)
        with self._session.conn.engine.connect() as convert, self._peek() as messages:
            buffer = _ChangeBuffer(convert, self._session.dialect, self._base, self.staged_columns,
                                   batch_rows)
            for data in messages:
                for change in collector.feed(pgoutput.decode(data)):
                    if buffer.add(change):
                        yield from buffer.flush()
            yield from buffer.flush()

    @contextlib.contextmanager
    def _peek(self) -> Iterator[Iterator[bytes]]:
        dbapi: Any = self._session.conn.connection.dbapi_connection  # psycopg2's connection
        cursor = dbapi.cursor(name="etl_cdc_peek")
        cursor.itersize = PEEK_FETCH_ROWS
        try:
            with driver_errors(self._session.dialect):
                cursor.execute(_PEEK_SQL, (self.log_range.slot, format_lsn(self.log_range.end),
                                           self.log_range.publication))
                yield (bytes(row[0]) for row in cursor)
        finally:
            cursor.close()

    def _shape(self) -> TableShape:
        facts = self._session.facts
        key = self.key_sources()
        with driver_errors(self._session.dialect):
            types: dict[str, int] = dict(self._session.conn.execute(sa.text(
                "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
                "AND NOT attisdropped"), {"oid": facts.oid}).all())
        missing = [name for name in key if name not in types]
        if missing:
            raise SourceSchemaError(f"key columns {missing} not found in {facts.namespace}.{facts.name}")
        columns = self.column_sources()
        return TableShape(facts.namespace, facts.name, columns, key, {name: types[name] for name in key})


class _ChangeBuffer(ChangeBuffer[bytes | None]):
    """pgoutput's text values, copied (COPY FROM, text format) into a temporary table of the
    source's own column types: PostgreSQL's input functions read them as they read any text."""

    def _create(self, base: SqlAlchemyTable) -> None:
        quote = self._conn.dialect.identifier_preparer.quote
        types: dict[str, str] = dict(self._conn.execute(sa.text(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "to_regclass(:qualified) AND attnum > 0 AND NOT attisdropped"),
            {"qualified": _qualified_sql(base.sa_table, quote)}).all())
        columns = ", ".join(f"{quote(name)} {types[name]}" for name in self._sources)
        with driver_errors(self._dialect):
            self._conn.execute(sa.text(
                f"CREATE TEMPORARY TABLE {TEMP_TABLE} ({columns}, {meta.SEQ} bigint, {meta.OP} text, "
                f"{meta.UNCHANGED} text)"))

    def _write(self, changes: list[PgChange]) -> None:
        with driver_errors(self._dialect):
            self._conn.execute(sa.text(f"TRUNCATE {TEMP_TABLE}"))
            self._copy_in(changes)

    def _copy_in(self, changes: list[PgChange]) -> None:
        data = io.BytesIO(b"".join(_copy_line(change, self._sources, self._unchanged(change))
                                   for change in changes))
        dbapi: Any = self._conn.connection.dbapi_connection  # psycopg2's connection
        with dbapi.cursor() as cursor:
            cursor.copy_expert(f"COPY {TEMP_TABLE} ({self._staged_names()}) FROM STDIN", data)


def _qualified_sql(table: sa.Table, quote: Any) -> str:
    return f"{quote(table.schema)}.{quote(table.name)}" if table.schema else quote(table.name)


_COPY_ESCAPES = {ord("\\"): b"\\\\", ord("\t"): b"\\t", ord("\n"): b"\\n", ord("\r"): b"\\r"}


def _copy_text(value: bytes | None) -> bytes:
    """A value in COPY's text format: NULL as \\N; backslash, tab, newline, CR escaped."""
    if value is None:
        return b"\\N"
    if not any(byte in _COPY_ESCAPES for byte in value):
        return value
    return b"".join(_COPY_ESCAPES.get(byte, bytes((byte,))) for byte in value)


def _copy_line(change: PgChange, sources: tuple[str, ...], unchanged: str | None) -> bytes:
    values = [change.values.get(name) for name in sources]
    extra = [str(change.seq).encode(), change.op.encode(), unchanged.encode() if unchanged else None]
    return b"\t".join(_copy_text(value) for value in (*values, *extra)) + b"\n"
