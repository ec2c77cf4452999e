"""Fixtures of the CDC suites: a fresh schema in the logical-decoding PostgreSQL, a table in it,
and the cdc request for it; its slots are dropped afterwards (a slot outliving its test would
hold WAL and take a replication slot of the session's cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from devstack.logical_postgres import LogicalPostgres
from tests.conftest import unique
from tests.e2e.oneshot import run_once

__all__ = ["CdcSource", "cdc_source", "run_once"]

ITEMS_DDL = (
    "CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name text, qty integer, price numeric(12, 2), "
    "doc jsonb, body text, tags text[], updated_at timestamptz)"
)


@dataclass
class CdcSource:
    server: LogicalPostgres
    engine: sa.Engine
    schema: str
    data_source_id: int
    slots: list[str] = field(default_factory=list)

    def request(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "data_source_id": self.data_source_id, "source_type": "postgresql",
            "connection_params": self.server.connection_params(), "schema_name": self.schema,
            "source_table_name": "items", "dest_table_name": "items", "load_type": "cdc",
        }
        return {**body, **fields}

    def execute(self, *statements: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement.format(schema=f'"{self.schema}"')), params)

    def rows(self, table: str = "items") -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            query = f'SELECT * FROM "{self.schema}".{table} ORDER BY id'
            return [tuple(row) for row in conn.execute(sa.text(query))]


_DATA_SOURCES = iter(range(1_000, 10**9))


@pytest.fixture
def cdc_source(logical_pg: LogicalPostgres) -> Iterator[CdcSource]:
    engine = logical_pg.admin_engine()
    schema = unique("c")
    source = CdcSource(logical_pg, engine, schema, next(_DATA_SOURCES) + 1_000 * (hash(schema) % 10**5))
    source.execute(f'CREATE SCHEMA "{schema}"', ITEMS_DDL)
    try:
        yield source
    finally:
        with engine.connect() as conn:
            for (slot,) in conn.execute(sa.text(
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE :prefix AND NOT active"),
                    {"prefix": f"etl_{source.data_source_id}_%"}):
                conn.execute(sa.text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
