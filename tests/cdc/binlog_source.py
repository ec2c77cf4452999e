"""Fixtures of the MariaDB binlog CDC suites: a fresh database in the throwaway binlog MariaDB
(devstack/private_mariadb.py), an `items` table in it, and the cdc request for it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from devstack.private_mariadb import PrivateMariaDB
from tests.conftest import unique

ITEMS_DDL = (
    "CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name varchar(64), qty int, price decimal(12, 2), "
    "doc json, body text, flags set('a', 'b', 'c'), updated_at timestamp(6) NULL)"
)


@dataclass
class BinlogSource:
    server: PrivateMariaDB
    engine: sa.Engine
    schema: str
    data_source_id: int

    @property
    def url(self) -> str:
        return self.server.url.rsplit("/", 1)[0] + f"/{self.schema}"

    def request(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "data_source_id": self.data_source_id, "source_type": "mysql",
            "connection_params": {**self.server.connection_params(), "database": self.schema},
            "source_table_name": "items", "dest_table_name": "items", "load_type": "cdc",
        }
        return {**body, **fields}

    def execute(self, *statements: str, **params: Any) -> None:
        """In one transaction."""
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement.format(schema=f"`{self.schema}`")), params)

    def rows(self, table: str = "items") -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SET time_zone = '+00:00'"))
            query = f"SELECT * FROM `{self.schema}`.{table} ORDER BY id"
            return [tuple(row) for row in conn.execute(sa.text(query))]


_DATA_SOURCES = iter(range(1, 10**6))


@pytest.fixture
def binlog_source(binlog_maria: PrivateMariaDB) -> Iterator[BinlogSource]:
    binlog_maria.assert_running()
    engine = sa.create_engine(binlog_maria.url, isolation_level="READ COMMITTED")
    schema = unique("b")
    data_source_id = 50_000 + next(_DATA_SOURCES) * 1000 + hash(schema) % 1000
    source = BinlogSource(binlog_maria, engine, schema, data_source_id)
    with binlog_maria.admin_engine().connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{schema}`"))
    source.execute(ITEMS_DDL)
    try:
        yield source
    finally:
        with binlog_maria.admin_engine().connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE `{schema}`"))
        engine.dispose()
