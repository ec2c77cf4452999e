"""SQLite through the standard sqlite3 module: a read-only file and one read transaction.

SQLite has no time zones: its clock is UTC (like CURRENT_TIMESTAMP), for zoned and naive cursors.
Dates and times are text; they are parsed here leniently (anything unreadable is NULL) because a
column's declared type does not stop other values from being stored. Window bounds compare as text,
so datetime cursors must be stored as ISO 'YYYY-MM-DD HH:MM:SS[.ffffff]', as SQLAlchemy and
SQLite's own functions write them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeEngine

from worker.classify import DriverMarkers
from worker.errors import ConfigurationError
from worker.messages import ConnectionParams
from worker.sources import typemap as tm
from worker.sources.columnar import ISO_DATE, ISO_DATETIME, all_of, decimals_from_numbers, iso_text
from worker.sources.converters import (
    Converter,
    bool_from_int,
    columnar_only,
    decimal_text,
    finite_decimal,
    per_value_only,
)
from worker.sources.dialect import CONNECT_TIMEOUT_S, Clock, SqlDialect
from worker.window import CursorValue

# sqlite3's errors (SQLite's messages, lower-cased) that say more than their class.
ERROR_MARKERS = DriverMarkers(missing_object=("no such table",), not_a_database=("file is not a database",))


# --- converters (each declared with its fast forms; SQLite has no fast reader of its own) ----------
def _datetime_from_text(value: Any) -> datetime | None:
    """A naive datetime from ISO text; an offset converts to UTC; anything else is NULL."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _date_from_text(value: Any) -> date | None:
    moment = _datetime_from_text(value)
    return None if moment is None else moment.date()


def _time_from_text(value: Any) -> time | None:
    if not isinstance(value, str):
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


def of_class(kind: type[Any], value: Any) -> Any:
    """The value when SQLite stored it with the declared type's storage class, else None."""
    return value if type(value) is kind else None


def _float_value(value: Any) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if float(value) == value else None  # huge ints lose digits as floats
    return value if isinstance(value, float) else None


def decimal_value(value: Any) -> Decimal | None:
    """A decimal from what SQLite stored: an INTEGER, a REAL (its shortest text: 0.1 is 0.1), or text
    that NUMERIC affinity kept because converting it would have lost digits."""
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, int | str) or isinstance(value, bool):
        return None
    try:
        number = Decimal(value)
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _then(second: Callable[[Decimal], Any], value: Any) -> Any:
    number = decimal_value(value)
    return number if number is None else second(number)


def stored_as(kind: type[Any]) -> Converter:
    """of_class(kind): a value stored with exactly that storage class passes unchanged."""
    return columnar_only(partial(of_class, kind), all_of(kind))


float_value = columnar_only(_float_value, all_of(float))
datetime_from_text = columnar_only(_datetime_from_text, iso_text(ISO_DATETIME))
date_from_text = columnar_only(_date_from_text, iso_text(ISO_DATE))
time_from_text = per_value_only(_time_from_text)
# The generic decimal converters, fed from the stored value (decimal_value first).
stored_decimal = columnar_only(partial(_then, finite_decimal.per_value), decimals_from_numbers)
stored_decimal_text = per_value_only(partial(_then, decimal_text.per_value))
_STORED_NUMBERS = {"NUMERIC": stored_decimal, "BIGNUMERIC": stored_decimal, "STRING": stored_decimal_text}


def numeric_rule(sa_type: TypeEngine[Any], resolve: tm.Resolver) -> tm.Target:
    """The generic NUMERIC/BIGNUMERIC/STRING choice, fed from the raw stored value: SQLAlchemy's
    processing would round a REAL to the declared scale and fails on text."""
    chosen = tm.numeric_rule(sa_type, resolve)
    return tm.target(chosen.bq_type, convert=_STORED_NUMBERS[chosen.bq_type], read="raw")


# SQLite stores any value in any column: each rule reads the raw stored value and keeps it only when
# it fits the declared type (anything else is a value BigQuery cannot hold in that column).
TYPES: tm.TypeTable = {
    sqltypes.Integer: tm.target("INT64", convert=stored_as(int), read="raw"),
    sqltypes.Float: tm.target("FLOAT64", convert=float_value, read="raw"),
    sqltypes.Numeric: numeric_rule,
    sqltypes.String: tm.target("STRING", convert=stored_as(str), read="raw"),
    sqltypes._Binary: tm.target("BYTES", convert=stored_as(bytes), read="raw"),
    sqltypes.Boolean: tm.target("BOOL", convert=bool_from_int, read="raw"),
    sqltypes.DateTime: tm.target("DATETIME", convert=datetime_from_text, read="raw"),
    sqltypes.Date: tm.target("DATE", convert=date_from_text, read="raw"),
    sqltypes.Time: tm.target("TIME", convert=time_from_text, read="raw"),
}

EXAMPLES = (
    tm.TypeExample("INTEGER (and INT, BIGINT, ...)", sqlite.INTEGER()),
    tm.TypeExample("REAL (and FLOAT, DOUBLE)", sqlite.REAL()),
    tm.TypeExample("TEXT, VARCHAR", sqlite.TEXT()),
    tm.TypeExample("BLOB", sqlite.BLOB()),
    tm.TypeExample("NUMERIC(p, s), DECIMAL(p, s)", sqlite.NUMERIC(10, 2), "the stored number, exactly"),
    tm.TypeExample("NUMERIC, DECIMAL (no precision)", sqlite.NUMERIC(), "text of the stored value"),
    tm.TypeExample("BOOLEAN", sqlite.BOOLEAN(), "0, 1; other values → NULL"),
    tm.TypeExample("DATE", sqltypes.DATE(), "ISO text; unreadable → NULL"),
    tm.TypeExample("DATETIME, TIMESTAMP", sqltypes.DATETIME(), "ISO text; an offset converts to UTC"),
    tm.TypeExample("TIME", sqltypes.TIME(), "ISO text; unreadable → NULL"),
    tm.TypeExample("JSON", sqlite.JSON(), "compact text, then PARSE_JSON"),
    tm.TypeExample("(no declared type)", sqltypes.NullType()),
)

LOSSES = (
    tm.Loss("every declared type", "a value stored with another storage class (text in an INTEGER "
            "column, a REAL 1.5 in an INTEGER column, a BLOB in a TEXT column, ...)", tm.NULLED),
    tm.Loss("DATE, DATETIME, TIMESTAMP, TIME", "text that is not ISO 8601, and numbers (Julian days, "
            "Unix times)", tm.NULLED),
    tm.Loss("DATETIME, TIMESTAMP", "an offset in the text (`+02:00`)", "the UTC wall-clock time"),
    tm.Loss("DATETIME, TIMESTAMP, TIME", "digits of a second beyond the sixth", "cut to microseconds"),
    tm.Loss("BOOLEAN", "a value other than 0 and 1", tm.NULLED),
    tm.Loss("NUMERIC(p, s), DECIMAL(p, s)", "a REAL", "its shortest decimal text (`0.1`)"),
    tm.Loss("NUMERIC(p, s), DECIMAL(p, s)", "more digits than the BigQuery type chosen for (p, s) holds",
            tm.NULLED),
    tm.Loss("JSON", "text that is not JSON", tm.NULLED),
)


_DATE_CHARS, _SECONDS_CHARS, _MICROS_CHARS = 10, 19, 26


class SQLiteDialect(SqlDialect):
    name = "sqlite"
    types = TYPES
    examples = EXAMPLES
    losses = LOSSES
    error_markers = ERROR_MARKERS

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

    def cursor_expr(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """SQLite compares datetimes as text: bring every stored form to 'YYYY-MM-DD HH:MM:SS.ffffff'
        ('T' or space, with or without a fraction of up to 6 digits, or a bare date) so that
        '2024-05-01 00:00:00' is not below a bound of '2024-05-01 00:00:00.000000'."""
        if not isinstance(column.type, sqltypes.DateTime):
            return column
        text = sa.func.replace(sa.cast(column, sa.Text), "T", " ")
        return sa.case(
            (sa.func.length(text) == _DATE_CHARS, text + " 00:00:00.000000"),
            (sa.func.length(text) == _SECONDS_CHARS, text + ".000000"),
            else_=sa.func.substr(text + "000000", 1, _MICROS_CHARS),
        )

    def cursor_param(self, value: CursorValue) -> object:
        if isinstance(value, datetime):  # the same normalised text as cursor_expr
            return sa.literal(value.replace(tzinfo=None).isoformat(" ", "microseconds"), sa.Text)
        return value

    def open_snapshot(self, conn: sa.Connection) -> Clock:
        conn.execute(sa.text("BEGIN"))
        conn.execute(sa.text("SELECT count(*) FROM sqlite_master")).scalar_one()  # first read: snapshot
        text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        now = datetime.fromisoformat(text)
        return Clock(zoned=now.replace(tzinfo=UTC), local=now)
