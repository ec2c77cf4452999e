"""A throwaway MariaDB with its binary log on (ROW, FULL row image and metadata), for CDC's tests
and bench: the machine's own server on 3306 has no binlog and is left alone.

`mariadb-install-db` into a temporary datadir (root with no password, over TCP on 127.0.0.1), then
`mariadbd` on a free port as a child of devstack.reaper (devstack/emulators.py: it goes down with
the calling process, even one killed by SIGKILL); stopped and removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devstack.emulators import _spawn, _wait_until, _with_retries, free_port, stop_process

DATABASE = "test"
COMMAND_TIMEOUT_S = 120
# What CDC needs (docs/cdc.md), plus speed: a test server need not survive a power cut.
SERVER_OPTIONS = ("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL",
                  "--binlog-row-metadata=FULL", "--server-id=1", "--innodb-flush-log-at-trx-commit=0",
                  "--sync-binlog=0", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                  "--max-connections=200")


@dataclass(frozen=True)
class BinlogMariaDB:
    port: int
    base: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/{DATABASE}"

    def connection_params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "database": DATABASE, "username": "root"}

    def admin_engine(self) -> sa.Engine:
        return sa.create_engine(self.url, isolation_level="AUTOCOMMIT")


def _binary(name: str, fallback: str) -> str:
    return shutil.which(name) or shutil.which(fallback) or f"/usr/sbin/{name}"


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _install(data: Path) -> None:
    # --no-defaults: the machine's my.cnf describes its own server, not this one.
    argv = [_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={data}",
            "--auth-root-authentication-method=normal", "--skip-test-db", f"--user={_user()}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def _answers(port: int) -> bool:
    engine = sa.create_engine(f"mysql+mysqldb://root@127.0.0.1:{port}/", connect_args={"connect_timeout": 1})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@contextlib.contextmanager
def binlog_mariadb() -> Iterator[BinlogMariaDB]:
    base = Path(tempfile.mkdtemp(prefix="etl-mariadb-binlog-"))
    data = base / "data"
    try:
        _install(data)

        def start(_attempt: int) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()  # another process may take it before mariadbd binds it: retried
            argv = [_binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}", f"--port={port}",
                    "--bind-address=127.0.0.1", f"--socket={base / 'sock'}", f"--pid-file={base / 'pid'}",
                    f"--user={_user()}", *SERVER_OPTIONS]
            process, log_path = _spawn("mariadbd", argv, base)
            _wait_until(lambda: _answers(port), process, "mariadbd", log_path)
            return process, port

        process, port = _with_retries(start)
        try:
            engine = sa.create_engine(f"mysql+mysqldb://root@127.0.0.1:{port}/", isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
            engine.dispose()
            yield BinlogMariaDB(port, base, process)
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)
