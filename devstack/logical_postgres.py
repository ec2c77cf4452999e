"""A throwaway PostgreSQL cluster with `wal_level=logical`, for CDC's tests and bench (the
machine's one runs with `replica`). initdb and postgres run as the `postgres` user when we run as
root (initdb refuses root); a temporary datadir; a free port on 127.0.0.1 (trust)."""

from __future__ import annotations

import contextlib
import glob
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


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], check: bool = True) -> None:
    subprocess.run(_as_postgres(argv), check=check, capture_output=True, timeout=120)


@contextlib.contextmanager
def logical_postgres() -> Iterator[LogicalPostgres]:
    base = Path(tempfile.mkdtemp(prefix="etl-pg-logical-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    _run([_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--auth=trust", "--no-sync"])
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=logical "
               "-c max_replication_slots=64 -c max_wal_senders=64 -c max_connections=200")
    _run([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"])
    try:
        server = LogicalPostgres(port, base)
        engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres",
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()
        yield server
    finally:
        _run([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)
