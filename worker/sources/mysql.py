"""MySQL and MariaDB through mysqlclient (MySQLdb): a consistent-snapshot READ ONLY transaction.

The session's time zone is set to UTC after reading the clock, so TIMESTAMP columns (stored in UTC,
returned in the session zone) come back as UTC, while NOW(6) is the session's default wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from worker.classify import DriverMarkers
from worker.messages import ConnectionParams, EtlRunRequest, TableSpec
from worker.sources import mysql_raw
from worker.sources import typemap as tm
from worker.sources.columnar import ISO_DATE, ISO_DATETIME, iso_text
from worker.sources.converters import Converter, iso_from_text, per_value_only
from worker.sources.dialect import CONNECT_TIMEOUT_S, Clock, FastRead, SqlDialect, server_url
from worker.window import CursorValue

_ONE_DAY = timedelta(days=1)


# MySQL's driver errors (mysqlclient's messages, lower-cased) that say more than their class.
ERROR_MARKERS = DriverMarkers(
    auth=("access denied for user",),
    unknown_database=("unknown database",),
    # Some refusals of a name come as OperationalError ("Incorrect table name", error 1059 ...).
    invalid_name=("invalid utf8", "incorrect table name", "incorrect database name", "incorrect column name",
                  "identifier name"),
    # 1054 "Unknown column" and 1146 "... doesn't exist" come as OperationalError from MySQLdb.
    missing_object=("unknown database", "unknown column", "doesn't exist", "does not exist"),
)


# --- converters (each declared with its fast forms) ------------------------------------------------
def _time_of_day(value: timedelta) -> time | None:
    """MySQL TIME is a duration (-838:59:59 .. 838:59:59); only a time of day fits BigQuery TIME."""
    if not timedelta(0) <= value < _ONE_DAY:
        return None
    return (datetime.min + value).time()


def _date_from_text(text: str) -> date | None:
    """A DATE as MySQL writes it; a zero date ('0000-00-00') or a zero month or day is no date."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _naive_from_text(text: str) -> datetime | None:
    """A DATETIME as MySQL writes it ('2024-01-02 03:04:05.123456'); zero dates are no date-time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _utc_from_text(text: str) -> datetime | None:
    """A TIMESTAMP as MySQL writes it in the snapshot's session time zone, which is UTC."""
    moment = _naive_from_text(text)
    return None if moment is None else moment.replace(tzinfo=UTC)


def _iso(convert: Callable[[str], Any], pattern: str) -> Converter:
    """fromisoformat of MySQL's text: where every text is strict ISO, Arrow's cast agrees with it."""
    return Converter(convert, columnar=iso_text(pattern), pg_copy=None, mysql_raw=iso_from_text(pattern))


# TIME's days and negative durations are no time of day: value by value, on every path.
time_of_day = per_value_only(_time_of_day)
date_from_text = _iso(_date_from_text, ISO_DATE)
naive_from_text = _iso(_naive_from_text, ISO_DATETIME)
utc_from_text = _iso(_utc_from_text, ISO_DATETIME)


def integer_rule(sa_type: TypeEngine[Any], _resolve: tm.Resolver) -> tm.Target:
    # TINYINT(1) is how MySQL spells BOOL; BIGINT UNSIGNED exceeds INT64, NUMERIC holds it exactly.
    if isinstance(sa_type, mysql.TINYINT) and sa_type.display_width == 1:
        return tm.BOOL_FROM_INT
    if isinstance(sa_type, mysql.BIGINT) and sa_type.unsigned:
        return UNSIGNED_BIGINT
    return tm.INT64


def bit_rule(sa_type: TypeEngine[Any], _resolve: tm.Resolver) -> tm.Target:
    # SQLAlchemy returns BIT as an int; BIT(64) exceeds INT64.
    return tm.INT64 if (getattr(sa_type, "length", None) or 1) <= 63 else UNSIGNED_BIGINT


UNSIGNED_BIGINT = tm.target("NUMERIC")  # ints: no NaN to filter
TIME_OF_DAY = tm.target("TIME", convert=time_of_day, read="raw")

TYPES: tm.TypeTable = {
    # Read as MySQL's text: MySQLdb turns zero dates into None, which could not be told from NULL
    # (and so could not be counted).
    sqltypes.Date: tm.target("DATE", convert=date_from_text, read="text"),
    sqltypes.DateTime: tm.target("DATETIME", convert=naive_from_text, read="text"),
    mysql.TINYINT: integer_rule,
    mysql.SMALLINT: integer_rule,
    mysql.MEDIUMINT: integer_rule,
    mysql.INTEGER: integer_rule,
    mysql.BIGINT: integer_rule,
    mysql.BIT: bit_rule,
    mysql.YEAR: tm.INT64,
    # SQLAlchemy's TIME processing drops the days of the driver's timedelta (25:00 would be 01:00).
    mysql.TIME: TIME_OF_DAY,
    # Reflected without timezone=True, yet it is an instant (read in the UTC session).
    mysql.TIMESTAMP: tm.target("TIMESTAMP", convert=utc_from_text, read="text"),
    mysql.SET: tm.STRING_RAW,  # the driver's 'a,b' text rather than SQLAlchemy's Python set
    mysql.ENUM: tm.STRING_RAW,
}

EXAMPLES = (
    tm.TypeExample("TINYINT(1), BOOL", mysql.TINYINT(display_width=1), "0, 1; other values → NULL"),
    tm.TypeExample("TINYINT .. BIGINT; UNSIGNED up to INT", mysql.INTEGER(unsigned=True)),
    tm.TypeExample("BIGINT UNSIGNED", mysql.BIGINT(unsigned=True)),
    tm.TypeExample("DECIMAL(p, s) with s ≤ 9 and p - s ≤ 29", mysql.DECIMAL(20, 4)),
    tm.TypeExample("DECIMAL(p, s) with s ≤ 38 and p - s ≤ 38", mysql.DECIMAL(65, 30)),
    tm.TypeExample("DECIMAL(p, s), wider", mysql.DECIMAL(65, 0), "exact text"),
    tm.TypeExample("FLOAT, DOUBLE", mysql.DOUBLE()),
    tm.TypeExample("CHAR, VARCHAR, TEXT", mysql.VARCHAR(10)),
    tm.TypeExample("ENUM", mysql.ENUM("a", "b")),
    tm.TypeExample("SET", mysql.SET("a", "b"), "text as MySQL writes it: 'a,b'"),
    tm.TypeExample("BLOB, BINARY, VARBINARY", mysql.BLOB()),
    tm.TypeExample("BIT(n), n ≤ 63", mysql.BIT(8)),
    tm.TypeExample("BIT(64)", mysql.BIT(64)),
    tm.TypeExample("YEAR", mysql.YEAR()),
    tm.TypeExample("DATE", mysql.DATE(), "zero date → NULL"),
    tm.TypeExample("DATETIME", mysql.DATETIME(fsp=6), "zero date → NULL"),
    tm.TypeExample("TIMESTAMP", mysql.TIMESTAMP(fsp=6), "as UTC; zero → NULL"),
    tm.TypeExample("TIME", mysql.TIME(fsp=6), "negative or ≥ 24:00:00 → NULL"),
    tm.TypeExample("JSON (MariaDB: LONGTEXT with json_valid)", mysql.JSON(), "compact text, then PARSE_JSON"),
    tm.TypeExample("GEOMETRY, POINT, ... (not listed)", sqltypes.NullType()),
)

LOSSES = (
    tm.Loss("DATE, DATETIME, TIMESTAMP", "zero dates (`0000-00-00`, `0000-00-00 00:00:00`) and dates "
            "with a zero month or day (`2024-00-10`), as a permissive sql_mode allows", tm.NULLED),
    tm.Loss("TIME", "negative, or 24:00:00 and more (MySQL TIME is a duration up to 838:59:59)", tm.NULLED),
    tm.Loss("TINYINT(1), BOOL", "a value other than 0 and 1 (MySQL reads 2 as true)", tm.NULLED),
    tm.Loss("TIMESTAMP", "the session time zone it was written in", "the same instant in UTC"),
    tm.Loss("FLOAT", "every value", "FLOAT64 of the shortest text MySQL sends (`1.1`)"),
    tm.Loss("SET", "every value", "STRING: MySQL's text, members in definition order (`a,c`)"),
    tm.Loss("ENUM", "an invalid value stored as `''` under a permissive sql_mode", "`''`"),
    tm.Loss("BIT(n)", "every value", "its unsigned integer value (INT64; NUMERIC for BIT(64))"),
    tm.Loss("YEAR", "every value", "INT64 (`0000` → `0`)"),
    tm.Loss("CHAR(n)", "trailing spaces", "removed, as MySQL itself returns CHAR values"),
)

# MariaDB stores JSON as LONGTEXT with a column CHECK (json_valid(`col`)), listed here
# (information_schema names are case-insensitive).
_CHECKS = sa.table(
    "CHECK_CONSTRAINTS",
    sa.column("constraint_schema"),
    sa.column("table_name"),
    sa.column("constraint_name"),
    sa.column("level"),
    sa.column("check_clause"),
    schema="information_schema",
)


def _json_valid_clause(column: str) -> str:
    return "json_valid(`" + column.replace("`", "``") + "`)"


class MySQLDialect(SqlDialect):
    name = "mysql"
    types = TYPES
    examples = EXAMPLES
    losses = LOSSES
    error_markers = ERROR_MARKERS

    def url(self, params: ConnectionParams) -> sa.URL:
        return server_url("mysql+mysqldb", params, charset="utf8mb4")

    def reflected_column(self, info: dict[str, Any]) -> None:
        # SQLAlchemy 2.1 reads a name from SHOW CREATE TABLE still escaped: `a``b` reflects as
        # "a``b", which it would quote again into a column that does not exist. MySQL escapes a
        # backtick by doubling it, always, so halving the pairs gives the name back exactly.
        info["name"] = info["name"].replace("``", "`")

    def connect_args(self) -> dict[str, Any]:
        return {"connect_timeout": CONNECT_TIMEOUT_S}

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": self.connect_args(), "isolation_level": "REPEATABLE READ"}

    def change_log_session(self, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                           log_from: str | None) -> AbstractContextManager[Any]:
        from worker.sources.mysql_cdc import cdc_session  # the CDC modules load for cdc requests only

        return cdc_session(self, conn, request, spec, log_from)

    parallel_key_ranges = True  # each range in its own consistent snapshot (no snapshot to share)

    def open_snapshot(self, conn: sa.Connection) -> Clock:
        conn.execute(sa.text(mysql_raw.START_SNAPSHOT_SQL))
        utc_now, local_now = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6), NOW(6)")).one()
        conn.execute(sa.text(mysql_raw.UTC_SESSION_SQL))
        return Clock(zoned=utc_now.replace(tzinfo=UTC), local=local_now)

    def refine_types(self, conn: sa.Connection, table: sa.Table) -> dict[str, TypeEngine[Any]]:
        if not getattr(conn.dialect, "is_mariadb", False):
            return {}  # MySQL has a real JSON type, reflected as such
        schema = table.schema or conn.execute(sa.select(sa.func.database())).scalar_one()
        query = sa.select(_CHECKS.c.constraint_name, _CHECKS.c.check_clause).where(
            _CHECKS.c.constraint_schema == schema,
            _CHECKS.c.table_name == table.name,
            _CHECKS.c.level == "Column",
        )
        return {
            name: mysql.JSON()
            for name, clause in conn.execute(query)
            if name in table.c and clause == _json_valid_clause(name)
        }

    def fast_batches(self, read: FastRead) -> Iterator[pa.RecordBatch] | None:
        return mysql_raw.fast_batches(read)  # raw text protocol values, when every column allows it

    def cursor_param(self, value: CursorValue) -> object:
        # The session zone is UTC; MySQLdb would send an aware datetime's offset, which MariaDB
        # does not accept in a literal.
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
