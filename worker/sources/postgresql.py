"""PostgreSQL through psycopg2: a REPEATABLE READ, READ ONLY transaction; now() and LOCALTIMESTAMP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC
from typing import Any

import psycopg2
import pyarrow as pa
import sqlalchemy as sa
from psycopg2 import extensions as pgext
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql as pg

from worker.classify import DriverMarkers
from worker.messages import ConnectionParams, EtlRunRequest, TableSpec
from worker.sources import pg_copy, pg_parallel
from worker.sources import typemap as tm
from worker.sources.arrays import Unrepresentable
from worker.sources.converters import finite_decimal
from worker.sources.dialect import CONNECT_TIMEOUT_S, Clock, FastRead, SqlDialect, server_url

_INFINITE = frozenset({"infinity", "-infinity"})
# psycopg2's driver errors (PostgreSQL's messages, lower-cased) that say more than their class.
ERROR_MARKERS = DriverMarkers(
    # "password authentication failed", and the other methods': "Ident/PAM/LDAP/... authentication
    # failed"; no pg_hba.conf line for this user; 'role "x" does not exist' at login.
    auth=("authentication failed", "no pg_hba.conf entry", 'role "'),
    unknown_database=(('database "', "does not exist"),),
    missing_object=("does not exist",),  # relation / schema "x" does not exist
)


def _lenient(base: Any) -> Any:
    """psycopg2's date/time typecaster, returning `Unrepresentable` for values BigQuery cannot hold.

    psycopg2 turns ±infinity into date(time).max/min (silently wrong), raises on years beyond 9999
    or BC, and turns time '24:00:00' into 00:00; a single such row would end the run. The marker
    lets the batch builder load NULL and count it (or refuse it in strict mode).
    """

    def cast(text: str | None, cursor: Any) -> Any:
        if text is None:
            return None
        if text in _INFINITE or text.startswith("24:"):
            return Unrepresentable(text)
        try:
            return base(text, cursor)
        except (ValueError, psycopg2.DataError):
            return Unrepresentable(text)

    return pgext.new_type(base.values, f"ETL_{base.name}", cast)


_SCALAR_CASTERS = {
    name: _lenient(getattr(pgext, name)) for name in ("PYDATE", "PYDATETIME", "PYDATETIMETZ", "PYTIME")
}
_CASTERS = (
    *_SCALAR_CASTERS.values(),
    *(
        pgext.new_array_type(getattr(pgext, f"{name}ARRAY").values, f"ETL_{name}ARRAY", caster)
        for name, caster in _SCALAR_CASTERS.items()
    ),
)

TYPES: tm.TypeTable = {
    pg.INTERVAL: tm.STRING_CAST,  # psycopg2's timedelta folds months into 30 days: PostgreSQL's text
    # money is an integer count of cents (lc_monetary's digits); its text ('$12.50') depends on the
    # locale, its numeric cast does not.
    pg.MONEY: tm.target("NUMERIC", convert=finite_decimal, read="numeric"),
    pg.INET: tm.STRING,
    pg.CIDR: tm.STRING,
}

EXAMPLES = (
    tm.TypeExample("smallint, integer, bigint", pg.BIGINT()),
    tm.TypeExample("numeric(p, s) with s ≤ 9 and p - s ≤ 29", pg.NUMERIC(38, 9), "NaN → NULL"),
    tm.TypeExample("numeric(p, s) with s ≤ 38 and p - s ≤ 38", pg.NUMERIC(76, 38), "NaN → NULL"),
    tm.TypeExample("numeric, or wider numeric(p, s)", pg.NUMERIC(), "exact text, NaN as 'NaN'"),
    tm.TypeExample("real, double precision", pg.DOUBLE_PRECISION(), "NaN, ±Infinity, -0 kept"),
    tm.TypeExample("boolean", pg.BOOLEAN()),
    tm.TypeExample("text, varchar(n), char(n)", pg.TEXT()),
    tm.TypeExample("bytea", pg.BYTEA()),
    tm.TypeExample("date", pg.DATE(), "±infinity, BC, year > 9999 → NULL"),
    tm.TypeExample("time", pg.TIME(), "24:00:00 → NULL"),
    tm.TypeExample("time with time zone", pg.TIME(timezone=True), "PostgreSQL's text, e.g. '12:34:56+05:30'"),
    tm.TypeExample("timestamp", pg.TIMESTAMP(), "±infinity, BC, year > 9999 → NULL"),
    tm.TypeExample("timestamp with time zone", pg.TIMESTAMP(timezone=True), "as UTC; same NULLs"),
    tm.TypeExample("json, jsonb", pg.JSONB(), "compact text, then PARSE_JSON"),
    tm.TypeExample("uuid", pg.UUID()),
    tm.TypeExample("inet, cidr", pg.INET()),
    tm.TypeExample("interval", pg.INTERVAL(), "PostgreSQL's text, e.g. '1 year 2 mons'"),
    tm.TypeExample("enum types", pg.ENUM("a", "b", name="mood")),
    tm.TypeExample("money", pg.MONEY(), "its value, e.g. 12.50"),
    tm.TypeExample("integer[] (arrays of any type above)", pg.ARRAY(pg.INTEGER()), "NULL elements → NULL"),
    tm.TypeExample("numeric(10, 2)[]", pg.ARRAY(pg.NUMERIC(10, 2))),
    tm.TypeExample("text[], uuid[], inet[], enum[]", pg.ARRAY(pg.TEXT())),
    tm.TypeExample("jsonb[]", pg.ARRAY(pg.JSONB()), "each element parsed"),
    tm.TypeExample("point, xml, tsvector, ranges, ... (not listed)", sqltypes.NullType()),
)

LOSSES = (
    tm.Loss("date, timestamp, timestamptz (also in arrays)", "`infinity`, `-infinity`", tm.NULLED),
    tm.Loss("date, timestamp, timestamptz (also in arrays)", "years after 9999, and BC", tm.NULLED),
    tm.Loss("time", "`24:00:00`", tm.NULLED),
    tm.Loss("numeric(p, s) (NUMERIC, BIGNUMERIC)", "`NaN`", tm.NULLED),
    tm.Loss("numeric without precision, or wider", "every value", "STRING: the exact decimal text, "
            "`NaN` and `±Infinity` spelled out"),
    tm.Loss("real", "every value", "FLOAT64 of the shortest text PostgreSQL prints (`0.1`, not "
            "`0.10000000149011612`)"),
    tm.Loss("timestamptz", "the offset it was written with", "the same instant in UTC (PostgreSQL does "
            "not store the offset either)"),
    tm.Loss("time with time zone", "every value", "STRING: PostgreSQL's text, e.g. `12:34:56.123456+05:30`"),
    tm.Loss("interval", "every value", "STRING: PostgreSQL's text in the server's IntervalStyle"),
    tm.Loss("money", "the currency symbol and grouping", "NUMERIC of the amount (`-$1,234.50` → `-1234.50`)"),
    tm.Loss("uuid, inet, cidr, enum", "every value", "STRING: PostgreSQL's text"),
)

class PostgresDialect(SqlDialect):
    name = "postgresql"
    types = TYPES
    examples = EXAMPLES
    losses = LOSSES
    error_markers = ERROR_MARKERS

    def url(self, params: ConnectionParams) -> sa.URL:
        return server_url("postgresql+psycopg2", params)

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "etl-worker"}}

    def on_connect(self, dbapi_conn: Any) -> None:
        for caster in _CASTERS:
            pgext.register_type(caster, dbapi_conn)

    def fast_batches(self, read: FastRead) -> Iterator[pa.RecordBatch] | None:
        # COPY ... TO STDOUT, when every column allows it: by several connections sharing the
        # session's snapshot when ETL_READERS_PER_RUN asks for them and the table has a heap.
        return pg_parallel.parallel_batches(read) or pg_copy.fast_batches(read)

    def change_log_session(self, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                           log_from: str | None) -> AbstractContextManager[Any]:
        from worker.sources.pg_cdc import cdc_session  # the CDC modules load for cdc requests only

        return cdc_session(self, conn, request, spec, log_from)

    parallel_key_ranges = True

    def export_snapshot(self, conn: sa.Connection) -> str | None:
        return str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())

    def import_snapshot(self, conn: sa.Connection, snapshot: str) -> None:
        pg_parallel.import_snapshot(conn, snapshot)

    def open_snapshot(self, conn: sa.Connection) -> Clock:
        # Must be the transaction's first statement; the snapshot is taken by the next one.
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        zoned, local = conn.execute(sa.text("SELECT now(), LOCALTIMESTAMP")).one()
        # timestamptz values are sent in the session's zone: in UTC, the greatest one (9999-12-31
        # 23:59:59.999999+00) is not written as year 10000, nor early years with a seconds offset.
        # After the clock: a naive cursor's window uses the session's own wall clock.
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        return Clock(zoned=zoned.astimezone(UTC), local=local)
