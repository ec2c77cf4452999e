"""A throwaway PostgreSQL cluster with `wal_level=logical`, for CDC's tests and bench (the
machine's one runs with `replica`): trust on 127.0.0.1, a `test` database (devstack/private_postgres.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devstack.private_postgres import private_cluster

DATABASE = "test"


@dataclass(frozen=True)
class LogicalPostgres:
    port: int
    base: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def connection_params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "database": DATABASE, "username": "postgres"}

    def admin_engine(self) -> sa.Engine:
        return sa.create_engine(self.url, isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def logical_postgres() -> Iterator[LogicalPostgres]:
    settings = ("wal_level=logical", "max_replication_slots=64", "max_wal_senders=64", "max_connections=200")
    with private_cluster("etl-pg-logical-", ["--auth=trust"], settings) as cluster:
        engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/postgres",
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()
        yield LogicalPostgres(cluster.port, cluster.base)
