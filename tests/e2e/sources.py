"""A small `orders` table seeded in PostgreSQL or MariaDB, with values that round-trip exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

PG_DDL = """CREATE TABLE "{schema}".orders (
    id bigint PRIMARY KEY, customer varchar(100) NOT NULL, amount numeric(12, 2),
    qty integer, is_paid boolean, note text, created_at timestamptz(6) NOT NULL)"""
MYSQL_DDL = """CREATE TABLE `{schema}`.orders (
    id bigint PRIMARY KEY, customer varchar(100) NOT NULL, amount decimal(12, 2),
    qty int, is_paid tinyint(1), note text, created_at datetime(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
BASE_TIME = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass(frozen=True)
class SeededSource:
    dialect: str  # postgresql | mysql
    engine: sa.Engine
    schema: str

    def connection_params(self) -> dict[str, Any]:
        url = self.engine.url
        params: dict[str, Any] = {"host": url.host, "port": url.port, "database": url.database,
                                  "username": url.username, "password": url.password or ""}
        if self.dialect == "mysql":
            params["database"] = self.schema
        return params

    def request(self, load_type: str, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema_version": 1, "data_source_id": 7, "source_type": self.dialect,
            "connection_params": self.connection_params(),
            "schema_name": self.schema, "source_table_name": "orders",
            "dest_table_name": "orders", "load_type": load_type,
        }
        if load_type in ("transactional", "merge"):  # the windowed modes
            body["timestamp_column"] = "created_at"
            body["historical_start_date"] = "2020-01-01"
        body.update(overrides)
        return body

    def insert(self, first_id: int, count: int, created_at: datetime | None = None) -> None:
        rows = [row(i, created_at) for i in range(first_id, first_id + count)]
        table = orders_table(self.schema)
        if self.dialect == "mysql":  # DATETIME is naive: store UTC wall-clock time
            rows = [{**r, "created_at": r["created_at"].replace(tzinfo=None)} for r in rows]
        with self.engine.begin() as conn:
            conn.execute(table.insert(), rows)

    def insert_now(self, first_id: int, count: int) -> None:
        """Rows stamped with the database's own current time (late-arriving data)."""
        clock = "now()" if self.dialect == "postgresql" else "NOW(6)"
        with self.engine.begin() as conn:
            now = conn.execute(sa.text(f"SELECT {clock}")).scalar_one()
        self.insert(first_id, count, now if now.tzinfo else now.replace(tzinfo=UTC))

    def rows(self) -> list[tuple[Any, ...]]:
        table = orders_table(self.schema)
        with self.engine.connect() as conn:
            result = conn.execute(sa.select(table).order_by(table.c.id)).all()
        return [normalise(tuple(r)) for r in result]


def orders_table(schema: str) -> sa.Table:
    return sa.Table(
        "orders", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("customer", sa.String(100)), sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("qty", sa.Integer), sa.Column("is_paid", sa.Boolean), sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True)), schema=schema,
    )


def row(i: int, created_at: datetime | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "customer": f"customer {i % 17} ✓ 🚀" if i % 5 else f"o'brien; DROP TABLE x -- {i}",
        "amount": None if i % 11 == 0 else Decimal(i * 7919 % 100000) / 100,
        "qty": i % 13,
        "is_paid": None if i % 7 == 0 else bool(i % 2),
        "note": "" if i % 3 == 0 else None if i % 3 == 1 else "n" * (i % 50),
        "created_at": created_at or BASE_TIME + timedelta(minutes=i, microseconds=i),
    }


def normalise(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Source and BigQuery rows compared on equal terms: UTC datetimes, bool for tinyint(1)."""
    out = []
    for value in values:
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif isinstance(value, datetime):
            value = value.astimezone(UTC)
        out.append(value)
    return tuple(out)


def fresh_database(request: Any) -> tuple[str, sa.Engine, str]:
    """The dialect a fixture is parametrized with, its admin engine and a fresh schema (PostgreSQL)
    or database (MariaDB) in it. `request`: the fixture's pytest request."""
    if request.param == "postgresql":
        return request.param, request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_schema")
    return request.param, request.getfixturevalue("mysql_admin"), request.getfixturevalue("mysql_db")


def seed(dialect: str, engine: sa.Engine, schema: str, count: int) -> SeededSource:
    ddl = PG_DDL if dialect == "postgresql" else MYSQL_DDL
    with engine.begin() as conn:
        conn.execute(sa.text(ddl.format(schema=schema)))
    source = SeededSource(dialect, engine, schema)
    source.insert(1, count)
    return source
