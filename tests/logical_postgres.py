"""A throwaway PostgreSQL cluster with `wal_level=logical`, for CDC (the machine's one runs with
`replica`). Like tests/password_postgres.py: initdb and postgres run as the `postgres` user when
the tests run as root; a temporary datadir; a free port on 127.0.0.1 (trust); one per session,
so one per xdist worker."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devstack.emulators import free_port
from tests.password_postgres import _as_postgres, _bin

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
    base = Path(tempfile.mkdtemp(prefix="etl-pg-logical-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                 "--auth=trust", "--no-sync"]), **run)
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=logical "
               "-c max_replication_slots=64 -c max_wal_senders=64 -c max_connections=200")
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                                 "-w", "start"]), **run)
    try:
        server = LogicalPostgres(port, base)
        engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres",
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()
        yield server
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
