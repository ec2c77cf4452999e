"""A MySQL/MariaDB binlog CDC session (`load_type: cdc`): the table from a consistent snapshot and
the binlog position it matches (a first run), or its changes from the ledger's position up to the
binlog's end fixed now (every later run). There is no slot: the ledger is the position.

The snapshot: `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then MariaDB's
`binlog_snapshot_file` / `binlog_snapshot_position` (no lock: the server records them atomically
with the snapshot); MySQL has no such status, so there the snapshot opens and SHOW MASTER STATUS
is read under a brief FLUSH TABLES WITH READ LOCK (as mysqldump --single-transaction does).
Changes: one non-blocking binlog dump (worker/cdc/binlog_stream.py), whose transactions are kept
whole by where they end (worker/cdc/binlog.py).

Row events come as the library's Python values. Rather than a second type system, a slice of
changes is written into a temporary table of the source columns' own types (on a second
connection, in a UTC session) and read back through the ordinary readers: a change's values
become exactly what a snapshot read of the same row gives.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from worker.cdc import meta
from worker.cdc import mysql as cdc_my
from worker.cdc.binlog import BinlogCollector, BinlogPosition, Commit, RowChange, bit_value, storable
from worker.cdc.binlog_stream import ZERO_DATE, binlog_events
from worker.cdc.changes import TableShape
from worker.cdc.lsn import parse_lsn
from worker.columns import Column
from worker.messages import EtlRunRequest, TableSpec
from worker.sources import mysql_raw
from worker.sources.base import LogRange
from worker.sources.cdc_table import TEMP_TABLE, ChangeBuffer, ChangeTable, checked_base
from worker.sources.dialect import Clock, SqlDialect, driver_errors
from worker.sources.sqlalchemy_source import SqlAlchemySession, SqlAlchemyTable

log = logging.getLogger(__name__)
_ZEROS = {"date": "0000-00-00", "datetime": "0000-00-00 00:00:00", "timestamp": "0000-00-00 00:00:00"}
# The temporary table takes what the binlog held, as the source stored it: zero dates included.
_CONVERT_SESSION_SQL = "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'"


@contextlib.contextmanager
def cdc_session(dialect: SqlDialect, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                log_from: str | None) -> Iterator[BinlogSession]:
    """Check the server, then read the changes after the ledger's position (`log_from`), or, on a
    first run (or `cdc_resnapshot`), the table in a snapshot with the binlog position it matches."""
    server_id = cdc_my.server_id_of(request, spec)
    database = request.schema_name or request.connection_params.database
    with driver_errors(dialect):
        server = cdc_my.server_facts(conn, database)
        cdc_my.readiness_of(conn, server, database, spec, server_id).raise_if_any()
        conn.rollback()
    committed = parse_lsn(log_from) if log_from else None
    with driver_errors(dialect):
        if committed is not None and not spec.cdc_resnapshot:
            clock = dialect.open_snapshot(conn)  # consistent; the session reads TIMESTAMP in UTC
            end = cdc_my.current_position(conn)
            start = cdc_my.ledger_position(conn, committed, end)
            log_range = LogRange(False, committed, max(end.encoded(), committed), _name(server_id), "")
            positions = (start, end)
        else:
            clock, end = _snapshot(dialect, conn, server.mariadb)
            log_range = LogRange(True, committed, end.encoded(), _name(server_id), "")
            positions = (end, end)
    log.info("binlog cdc of %s: %s from %s to %s", spec.source_table_name,
             "snapshot" if log_range.snapshot else "changes", positions[0], positions[1])
    yield BinlogSession(conn, dialect, clock, request, log_range, server_id, positions)


def _snapshot(dialect: SqlDialect, conn: sa.Connection, mariadb: bool) -> tuple[Clock, BinlogPosition]:
    """A consistent snapshot and the binlog position it holds every transaction up to: MariaDB
    records it with the snapshot (no lock); MySQL cannot, so commits wait while it opens."""
    if mariadb:
        clock = dialect.open_snapshot(conn)
        return clock, cdc_my.snapshot_position(conn)
    with cdc_my.global_read_lock(conn):
        clock = dialect.open_snapshot(conn)
        return clock, cdc_my.current_position(conn)


def _name(server_id: int) -> str:
    return f"server_id {server_id}"  # where a PostgreSQL range names its slot


class BinlogSession(SqlAlchemySession):
    """The session of a binlog cdc request: its one table reads the snapshot or the changes."""

    def __init__(self, conn: sa.Connection, dialect: SqlDialect, clock: Clock, request: EtlRunRequest,
                 log_range: LogRange, server_id: int,
                 positions: tuple[BinlogPosition, BinlogPosition]) -> None:
        super().__init__(conn, dialect, clock, request.schema_name, strict=request.strict_types)
        self.log_range = log_range
        self.server_id = server_id
        self.start, self.end = positions

    def table(self, spec: TableSpec) -> BinlogTable:  # type: ignore[override]
        return BinlogTable(self, checked_base(super().table(spec)))


class BinlogTable(ChangeTable):
    """A cdc table read from the binlog: the transactions ending in (start, end]."""

    def __init__(self, session: BinlogSession, base: SqlAlchemyTable) -> None:
        super().__init__(base, session.log_range)
        self._session = session

    def _log_report(self) -> dict[str, Any]:
        session = self._session
        return {
            "binlog_start": None if self.log_range.snapshot else str(session.start),
            "binlog_end": str(session.end),
            "server_id": session.server_id,
        }

    def confirm(self, position: int) -> None:
        """Nothing to release: the binlog is kept by the server's retention, not by the worker."""

    def _change_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        session = self._session
        schema, name = self._names()
        shape = TableShape(schema, name, self.column_sources(), self.key_sources())
        collector = BinlogCollector(shape, session.start, session.end, self.counts)
        with driver_errors(session.dialect), session.conn.engine.connect() as convert, \
                binlog_events(_pymysql_settings(session.conn.engine.url), session.server_id, session.start,
                              schema, name) as events:
            buffer = _ChangeBuffer(convert, session.dialect, self._base, self.staged_columns, batch_rows)
            for event in events:
                for change in collector.feed(event):
                    if buffer.add(change):
                        yield from buffer.flush()
                if isinstance(event, Commit) and collector.done(event.position):
                    break
            yield from buffer.flush()

    def _names(self) -> tuple[str, str]:
        table = self._base.sa_table
        schema = table.schema or str(self._session.conn.execute(sa.text("SELECT DATABASE()")).scalar_one())
        return schema, table.name


def _pymysql_settings(url: sa.URL) -> dict[str, Any]:
    """The source's connection as PyMySQL takes it (the password stays out of every log line)."""
    return {"host": url.host or "127.0.0.1", "port": url.port or 3306, "user": url.username or "",
            "password": url.password or "", "charset": "utf8mb4", "connect_timeout": 10}


class _ChangeBuffer(ChangeBuffer[object]):
    """A row event's Python values, inserted into a temporary table of the source's own column
    types (in a UTC session) as the source stored them (each column's `_writer`)."""

    _OP_TYPE = sa.String(1)
    _writers: dict[str, Callable[[object], object]]  # by `_create`: how each column's values are written

    def __init__(self, conn: sa.Connection, dialect: SqlDialect, base: SqlAlchemyTable,
                 staged: tuple[Column, ...], batch_rows: int) -> None:
        super().__init__(conn, dialect, base, staged, batch_rows)
        self._insert = self._insert_sql()

    def _write(self, changes: list[RowChange]) -> None:
        rows = [self._row(change) for change in changes]
        with driver_errors(self._dialect):
            self._conn.execute(sa.text(f"TRUNCATE TABLE {TEMP_TABLE}"))
            cursor = self._conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.executemany(self._insert, rows)
            finally:
                cursor.close()

    def _row(self, change: RowChange) -> tuple[object, ...]:
        values = tuple(self._writers[name](change.values.get(name)) for name in self._sources)
        return (*values, change.seq, change.op, self._unchanged(change))

    def _insert_sql(self) -> str:
        names = self._staged_names().replace("%", "%%")  # PyMySQL's paramstyle: a literal % doubled
        marks = ", ".join(["%s"] * (len(self._sources) + 3))
        return f"INSERT INTO {TEMP_TABLE} ({names}) VALUES ({marks})"

    def _create(self, base: SqlAlchemyTable) -> None:
        """The temporary table, every column as the source's (its COLUMN_TYPE and collation), NULL
        allowed (a delete carries only its key); and how each column's values are written."""
        quote = self._conn.dialect.identifier_preparer.quote
        source = base.sa_table
        with driver_errors(self._dialect):
            self._conn.execute(sa.text(mysql_raw.UTC_SESSION_SQL))
            self._conn.execute(sa.text(_CONVERT_SESSION_SQL))
            rows = self._conn.execute(sa.text(
                "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, CHARACTER_SET_NAME, COLLATION_NAME FROM "
                "information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND "
                "TABLE_NAME = :table"), {"schema": source.schema, "table": source.name}).all()
            types = {str(row[0]): row for row in rows}
            columns = ", ".join(f"{quote(name)} {_column_type(types[name])} NULL DEFAULT NULL"
                                for name in self._sources)
            self._conn.execute(sa.text(f"DROP TEMPORARY TABLE IF EXISTS {TEMP_TABLE}"))
            self._conn.execute(sa.text(
                f"CREATE TEMPORARY TABLE {TEMP_TABLE} ({columns}, {meta.SEQ} BIGINT, {meta.OP} CHAR(1), "
                f"{meta.UNCHANGED} TEXT) CHARACTER SET utf8mb4"))
        self._writers = {name: _writer(str(types[name][2]).lower()) for name in self._sources}


def _column_type(row: Any) -> str:
    _name, column_type, _data_type, charset, collation = row
    text = str(column_type)
    if charset and collation:
        text += f" CHARACTER SET {charset} COLLATE {collation}"
    return text


def _writer(data_type: str) -> Callable[[object], object]:
    """How a row event's value of this column type is written back as the source stored it."""
    zeros = _ZEROS.get(data_type)
    if zeros is not None:
        return lambda value: zeros if value is ZERO_DATE else _temporal(value)
    return _WRITERS.get(data_type, storable)


def _temporal(value: object) -> object:
    if isinstance(value, datetime):  # TIMESTAMP: naive UTC, written in the UTC session
        return (value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value).isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    return storable(value)


def _time(value: object) -> object:
    """TIME is a duration (-838:59:59 .. 838:59:59): written as [-]H:MM:SS.ffffff."""
    if not isinstance(value, timedelta):
        return storable(value)
    micros = abs(value) // timedelta(microseconds=1)
    seconds, fraction = divmod(micros, 10**6)
    sign = "-" if value < timedelta(0) else ""
    return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"


def _year(value: object) -> object:
    """YEAR 0000 comes as 1900 (no valid YEAR: 1901..2155)."""
    return 0 if value == 1900 else value


_WRITERS: Mapping[str, Callable[[object], object]] = {"bit": bit_value, "time": _time, "year": _year}
