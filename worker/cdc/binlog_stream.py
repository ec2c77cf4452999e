"""python-mysql-replication's events as worker/cdc/binlog.py's: one non-blocking binlog dump from
a transaction boundary, read once, never reconnected.

Why these settings (docs/cdc.md, "Found so far"): `is_mariadb=False` with `resume_stream=True`
sends the real file and offset (with `is_mariadb=True` and no GTID the library streams the file
from its start, issue #618); MariaDB's GTID events still arrive. The library reconnects by itself
after errors 2006/2013, from a position it takes from row events (#367): the connection factory
refuses a second stream connection, so a dropped connection fails the run (transiently) and the
redelivery reads again from the ledger's position.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Final

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import NONE_SOURCE
from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from worker.cdc.binlog import Begin, BinlogPosition, Commit, Event, Rows, Statement
from worker.cdc.changes import DELETE, INSERT, UPDATE, Op
from worker.errors import BinlogPurgedError, SourceConnectionError, UnsupportedChangeError

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 600
_EVENTS = (MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, WriteRowsEvent, UpdateRowsEvent,
           DeleteRowsEvent, RotateEvent)
_OPS: Mapping[type, Op] = {WriteRowsEvent: INSERT, UpdateRowsEvent: UPDATE, DeleteRowsEvent: DELETE}
_CTL_DATABASE = "information_schema"  # the library's second ("ctl") connection
_LOG_PURGED = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the file asked for is gone
# A statement inside a transaction that neither opens nor closes it.
_INSIDE = ("SAVEPOINT", "ROLLBACK TO", "RELEASE SAVEPOINT", "XA ")


class ZeroDate:
    """A DATE/DATETIME/TIMESTAMP value of zeros (or a zero month or day): the library hands it as
    None; the conversion writes it back as zeros, so it is counted as a snapshot read counts it."""

    def __repr__(self) -> str:
        return "ZERO_DATE"


ZERO_DATE: Final = ZeroDate()
# Why the library gives None instead of a value (pymysqlreplication.constants.NONE_SOURCE), and
# what the value was: a zero date; an empty SET; a column the row image left out (MINIMAL image,
# written before binlog_row_image was FULL: the destination keeps its value).
_NONE_SOURCES: Final[Mapping[str, object]] = {
    NONE_SOURCE.OUT_OF_DATE_RANGE: ZERO_DATE, NONE_SOURCE.OUT_OF_DATETIME_RANGE: ZERO_DATE,
    NONE_SOURCE.OUT_OF_DATETIME2_RANGE: ZERO_DATE, NONE_SOURCE.EMPTY_SET: "",
}


class _OneStream:
    """The library's connection factory: the ctl connection, and the stream's first connection only."""

    def __init__(self) -> None:
        self.streams = 0

    def __call__(self, **settings: Any) -> pymysql.Connection[Any]:
        if settings.get("db") != _CTL_DATABASE:
            self.streams += 1
            if self.streams > 1:
                raise SourceConnectionError(
                    "the binlog stream's connection dropped: the run stops rather than let the library "
                    "resume from a row event's position; the redelivery reads again from the ledger's")
        return pymysql.connect(**settings)


@contextlib.contextmanager
def binlog_events(connection: Mapping[str, Any], server_id: int, start: BinlogPosition, schema: str,
                  table: str) -> Iterator[Iterator[Event]]:
    """The events from `start` (a transaction boundary) to the binlog's end, non-blocking; row
    events of `schema`.`table` only (every transaction's boundaries still arrive)."""
    stream = BinLogStreamReader(
        connection_settings={**connection, "read_timeout": READ_TIMEOUT_S}, server_id=server_id,
        resume_stream=True, log_file=start.file, log_pos=start.offset, blocking=False, is_mariadb=False,
        only_events=list(_EVENTS), only_schemas=[schema], only_tables=[table], pymysql_wrapper=_OneStream(),
        enable_logging=False)
    try:
        yield _events(stream)
    finally:
        stream.close()


def _events(stream: BinLogStreamReader) -> Iterator[Event]:
    try:
        for event in stream:
            yield from _translated(event, stream.log_file)
    except pymysql.OperationalError as exc:
        if exc.args and exc.args[0] == _LOG_PURGED:
            raise BinlogPurgedError(
                f"the server cannot send the binlog from the ledger's position: {exc.args[-1]}") from exc
        raise


def _translated(event: Any, log_file: str) -> Iterator[Event]:
    if isinstance(event, (MariadbGtidEvent, GtidEvent)):
        yield Begin(str(event.gtid), _end(event, log_file))
    elif isinstance(event, XidEvent):
        yield _commit(event, log_file)
    elif isinstance(event, QueryEvent):
        yield from _query(event, log_file)
    elif type(event) in _OPS:
        yield Rows(event.schema, event.table, _OPS[type(event)], [_row(row) for row in event.rows])


def _end(event: Any, log_file: str) -> BinlogPosition:
    return BinlogPosition(log_file, int(event.packet.log_pos))


def _commit(event: Any, log_file: str) -> Commit:
    return Commit(_end(event, log_file), int(event.timestamp))


def _query(event: Any, log_file: str) -> Iterator[Event]:
    query = str(event.query).strip()
    keyword = query.upper()
    if keyword == "BEGIN":
        yield Begin(None, _end(event, log_file))
    elif keyword in ("COMMIT", "ROLLBACK"):  # ROLLBACK closes a group whose non-transactional rows stay
        yield _commit(event, log_file)
    elif not keyword.startswith(_INSIDE):  # DDL (TRUNCATE among them): its own transaction
        schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema)
        yield Statement(schema, query)
        yield _commit(event, log_file)


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The library's row dict, each None it gave for a value (zero dates, an empty SET) as that
    value; a column it did not have left out."""
    fixed = dict(row)
    for values, reasons in (("values", "none_sources"), ("before_values", "before_none_sources"),
                            ("after_values", "after_none_sources")):
        if values in row:
            fixed[values] = _values(row[values], row.get(reasons) or {})
    return fixed


def _values(values: Mapping[str, Any], reasons: Mapping[str, str]) -> dict[str, Any]:
    out = dict(values)
    for name, reason in reasons.items():
        if reason in _NONE_SOURCES:
            out[name] = _NONE_SOURCES[reason]
        elif reason == NONE_SOURCE.COLS_BITMAP:
            del out[name]
        elif reason == NONE_SOURCE.JSON_PARTIAL_UPDATE:
            raise UnsupportedChangeError(
                f"column {name!r} was logged as a partial JSON update: set binlog_row_value_options to '' "
                "(MySQL), then reload the table (docs/cdc.md)")
    return out
