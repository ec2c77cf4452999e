"""SQLite through the standard sqlite3 module: a read-only file and one read transaction.

SQLite has no time zones: its clock is UTC (like CURRENT_TIMESTAMP), for zoned and naive cursors.
Dates and times are text; they are parsed here leniently (anything unreadable is NULL) because a
column's declared type does not stop other values from being stored. Window bounds compare as text,
so datetime cursors must be stored as ISO 'YYYY-MM-DD HH:MM:SS[.ffffff]', as SQLAlchemy and
SQLite's own functions write them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import sqlite

from worker.errors import ConfigurationError
from worker.messages import ConnectionParams
from worker.sources import typemap as tm
from worker.sources.sqlalchemy_source import CONNECT_TIMEOUT_S, Clock, SqlDialect


def datetime_from_text(value: Any) -> datetime | None:
    """A naive datetime from ISO text; an offset converts to UTC; anything else is NULL."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def date_from_text(value: Any) -> date | None:
    moment = datetime_from_text(value)
    return None if moment is None else moment.date()


def time_from_text(value: Any) -> time | None:
    if not isinstance(value, str):
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


# The generic rules' SQLAlchemy processing raises on a malformed value; read the text instead.
TYPES: tm.TypeTable = {
    sqltypes.DateTime: tm.Target(pa.timestamp("us"), "DATETIME", convert=datetime_from_text, read="raw"),
    sqltypes.Date: tm.Target(pa.date32(), "DATE", convert=date_from_text, read="raw"),
    sqltypes.Time: tm.Target(pa.time64("us"), "TIME", convert=time_from_text, read="raw"),
}

EXAMPLES = (
    tm.TypeExample("INTEGER", sqlite.INTEGER()),
    tm.TypeExample("REAL", sqlite.REAL()),
    tm.TypeExample("TEXT, VARCHAR", sqlite.TEXT()),
    tm.TypeExample("BLOB", sqlite.BLOB()),
    tm.TypeExample("NUMERIC(p, s), DECIMAL(p, s)", sqlite.NUMERIC(10, 2), "stored as REAL by SQLite"),
    tm.TypeExample("NUMERIC, DECIMAL (no precision)", sqlite.NUMERIC(), "text of the stored value"),
    tm.TypeExample("BOOLEAN", sqlite.BOOLEAN()),
    tm.TypeExample("DATE", sqltypes.DATE(), "ISO text; unreadable → NULL"),
    tm.TypeExample("DATETIME, TIMESTAMP", sqltypes.DATETIME(), "ISO text; an offset converts to UTC"),
    tm.TypeExample("TIME", sqltypes.TIME(), "ISO text; unreadable → NULL"),
    tm.TypeExample("JSON", sqlite.JSON(), "compact text"),
    tm.TypeExample("(no declared type)", sqltypes.NullType()),
)


class SQLiteDialect(SqlDialect):
    name = "sqlite"
    types = TYPES
    examples = EXAMPLES

    def url(self, params: ConnectionParams) -> sa.URL:
        path = Path(params.database).expanduser()
        if not path.is_file():  # mode=ro never creates it, but say clearly what is wrong
            raise ConfigurationError(f"SQLite database file not found: {params.database}")
        # A file: URI (percent-encoded) so that mode=ro applies: the worker never writes a source.
        return sa.URL.create(
            "sqlite+pysqlite", database=path.resolve().as_uri(), query={"mode": "ro", "uri": "true"}
        )

    def engine_options(self) -> dict[str, Any]:
        # check_same_thread off: the runner may stream from another thread than the one that
        # opened the snapshot; the connection is still used by one thread at a time.
        return {"connect_args": {"timeout": CONNECT_TIMEOUT_S, "check_same_thread": False}}

    def on_connect(self, dbapi_conn: Any) -> None:
        # sqlite3 would not BEGIN before a SELECT: take over transaction control (SQLAlchemy's recipe).
        dbapi_conn.isolation_level = None

    def open_snapshot(self, conn: sa.Connection) -> Clock:
        conn.execute(sa.text("BEGIN"))
        conn.execute(sa.text("SELECT count(*) FROM sqlite_master")).scalar_one()  # first read: snapshot
        text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        now = datetime.fromisoformat(text)
        return Clock(zoned=now.replace(tzinfo=UTC), local=now)
