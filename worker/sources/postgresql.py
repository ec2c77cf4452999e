"""PostgreSQL through psycopg2: a REPEATABLE READ, READ ONLY transaction; now() and LOCALTIMESTAMP."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import psycopg2
import sqlalchemy as sa
from psycopg2 import extensions as pgext
from sqlalchemy.dialects import postgresql as pg

from worker.messages import ConnectionParams
from worker.sources import typemap as tm
from worker.sources.sqlalchemy_source import CONNECT_TIMEOUT_S, Clock, SqlDialect, password_of

_INFINITE = frozenset({"infinity", "-infinity"})


def _lenient(base: Any) -> Any:
    """psycopg2's date/time typecaster, returning NULL for values Python (and BigQuery) cannot hold.

    psycopg2 turns ±infinity into date(time).max/min (silently wrong), raises on years beyond 9999
    or BC, and turns time '24:00:00' into 00:00; a single such row would end the run.
    """

    def cast(text: str | None, cursor: Any) -> Any:
        if text is None or text in _INFINITE or text.startswith("24:"):
            return None
        try:
            return base(text, cursor)
        except (ValueError, psycopg2.DataError):
            return None

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
    pg.MONEY: tm.STRING_CAST,
    pg.INET: tm.STRING,
    pg.CIDR: tm.STRING,
}

EXAMPLES = (
    tm.TypeExample("smallint, integer, bigint", pg.BIGINT()),
    tm.TypeExample("numeric(p, s) with s ≤ 9 and p - s ≤ 29", pg.NUMERIC(38, 9), "NaN → NULL"),
    tm.TypeExample("numeric(p, s) with s ≤ 38 and p - s ≤ 38", pg.NUMERIC(76, 38), "NaN → NULL"),
    tm.TypeExample("numeric, or wider numeric(p, s)", pg.NUMERIC(), "exact text, NaN as 'NaN'"),
    tm.TypeExample("real, double precision", pg.DOUBLE_PRECISION()),
    tm.TypeExample("boolean", pg.BOOLEAN()),
    tm.TypeExample("text, varchar(n), char(n)", pg.TEXT()),
    tm.TypeExample("bytea", pg.BYTEA()),
    tm.TypeExample("date", pg.DATE(), "±infinity, BC, year > 9999 → NULL"),
    tm.TypeExample("time", pg.TIME(), "24:00:00 → NULL"),
    tm.TypeExample("time with time zone", pg.TIME(timezone=True)),
    tm.TypeExample("timestamp", pg.TIMESTAMP(), "±infinity, BC, year > 9999 → NULL"),
    tm.TypeExample("timestamp with time zone", pg.TIMESTAMP(timezone=True), "as UTC"),
    tm.TypeExample("json, jsonb", pg.JSONB(), "compact text"),
    tm.TypeExample("uuid", pg.UUID()),
    tm.TypeExample("inet, cidr", pg.INET()),
    tm.TypeExample("interval", pg.INTERVAL(), "PostgreSQL's text, e.g. '1 year 2 mons'"),
    tm.TypeExample("enum types", pg.ENUM("a", "b", name="mood")),
    tm.TypeExample("money", pg.MONEY(), "PostgreSQL's text, e.g. '$12.50'"),
    tm.TypeExample("integer[] (arrays of the types above)", pg.ARRAY(pg.INTEGER()), "NULL elements → NULL"),
)


class PostgresDialect(SqlDialect):
    name = "postgresql"
    types = TYPES
    examples = EXAMPLES

    def url(self, params: ConnectionParams) -> sa.URL:
        return sa.URL.create(
            "postgresql+psycopg2",
            username=params.username,
            password=password_of(params),
            host=params.host,
            port=params.port,
            database=params.database,
        )

    def engine_options(self) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "etl-worker"}}

    def on_connect(self, dbapi_conn: Any) -> None:
        for caster in _CASTERS:
            pgext.register_type(caster, dbapi_conn)

    def open_snapshot(self, conn: sa.Connection) -> Clock:
        # Must be the transaction's first statement; the snapshot is taken by the next one.
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        zoned, local = conn.execute(sa.text("SELECT now(), LOCALTIMESTAMP")).one()
        return Clock(zoned=zoned.astimezone(UTC), local=local)
