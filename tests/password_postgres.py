"""A throwaway PostgreSQL cluster that checks passwords (scram-sha-256 on 127.0.0.1).

The machine's PostgreSQL trusts every local connection, so a wrong password cannot fail there; this
one does. It runs as the `postgres` user when the tests run as root (initdb refuses root), listens
on 127.0.0.1 only, and is admin-reachable through its own Unix socket (trust).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from devstack.private_postgres import private_cluster


@dataclass(frozen=True)
class PasswordPostgres:
    port: int
    socket_dir: Path

    def admin_engine(self, database: str = "postgres") -> sa.Engine:
        url = sa.URL.create("postgresql+psycopg2", username="postgres", database=database,
                            query={"host": str(self.socket_dir), "port": str(self.port)})
        return sa.create_engine(url, isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def password_postgres() -> Iterator[PasswordPostgres]:
    with private_cluster("etl-pg-", ["--auth-host=scram-sha-256", "--auth-local=trust"]) as cluster:
        yield PasswordPostgres(cluster.port, cluster.base)
