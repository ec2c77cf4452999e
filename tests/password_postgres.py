"""A throwaway PostgreSQL cluster that checks passwords (scram-sha-256 on 127.0.0.1).

The machine's PostgreSQL trusts every local connection, so a wrong password cannot fail there; this
one does. It runs as the `postgres` user when the tests run as root (initdb refuses root), listens
on 127.0.0.1 only, and is admin-reachable through its own Unix socket (trust).
"""

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

import sqlalchemy as sa

from devstack.emulators import free_port


@dataclass(frozen=True)
class PasswordPostgres:
    port: int
    socket_dir: Path

    def admin_engine(self, database: str = "postgres") -> sa.Engine:
        url = sa.URL.create("postgresql+psycopg2", username="postgres", database=database,
                            query={"host": str(self.socket_dir), "port": str(self.port)})
        return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run_as_postgres(argv: list[str]) -> None:
    subprocess.run(_as_postgres(argv), check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def password_postgres() -> Iterator[PasswordPostgres]:
    base = Path(tempfile.mkdtemp(prefix="etl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    _run_as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                      "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync"])
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run_as_postgres([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"])
    try:
        yield PasswordPostgres(port, base)
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
