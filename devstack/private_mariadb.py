"""A throwaway MariaDB with the settings a test or bench needs that the machine's server on 3306
lacks (which is left alone): a ROW binary log for CDC (`binlog_mariadb`), a buffer pool that holds
the bench tables for the MySQL speed bench (`private_mariadb` with its own options).

`mariadb-install-db` into a temporary datadir (root with no password, over TCP on 127.0.0.1), then
`mariadbd` on a free port as a child of devstack.reaper (devstack/emulators.py: it goes down with
the calling process, even one killed by SIGKILL); stopped and removed on exit.

Each server, its bootstrap included, has its own tmpdir: a MariaDB server deletes every `#sql*`
file of its tmpdir when it starts (the temporary tables a crash left behind), so with the shared
/tmp a server starting in one test process deleted the temporary tables of concurrent bootstraps
(3 of 12 installs started together failed: "Unknown table 'mysql.tmp_user_sys'"; none with a tmpdir
each) and the on-disk temporary tables of queries running on the servers already up, the machine's
own on 3306 included: 10.11 then fails the query, or dies of SIGSEGV (seen in a probe: three
sessions running a GROUP BY that spills to disk while other servers bootstrapped; and in CI, a test
process's binlog server gone mid-session).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from devstack.emulators import _spawn, _wait_until, _with_retries, free_port, stop_process

DATABASE = "test"
COMMAND_TIMEOUT_S = 120
LOG_LINES = 40  # of mariadb-install-db's output, or of the server's log, in an error
# Speed: a throwaway server need not survive a power cut.
BASE_OPTIONS = ("--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve", "--max-connections=200")
# What CDC needs (docs/cdc.md).
BINLOG_OPTIONS = ("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL",
                  "--binlog-row-metadata=FULL", "--server-id=1", "--sync-binlog=0",
                  "--innodb-buffer-pool-size=64M")


@dataclass(frozen=True)
class PrivateMariaDB:
    port: int
    base: Path
    process: subprocess.Popen[bytes]  # devstack.reaper's, which runs mariadbd as its child

    @property
    def server_pid(self) -> int:
        """mariadbd's own process id (its CPU is what the speed bench measures)."""
        return int((self.base / "pid").read_text().strip())

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/{DATABASE}"

    def connection_params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "database": DATABASE, "username": "root"}

    def admin_engine(self) -> sa.Engine:
        return sa.create_engine(self.url, isolation_level="AUTOCOMMIT")

    def assert_running(self) -> None:
        """Raise, with the end of the server's log, if it has exited: the test that finds it gone
        says why, not only that a connection was refused."""
        if self.process.poll() is not None:
            lines = (self.base / "mariadbd.log").read_text(errors="replace").splitlines()
            raise RuntimeError(f"the private mariadbd on port {self.port} exited with "
                               f"{self.process.returncode}; its log ends:\n" + "\n".join(lines[-LOG_LINES:]))


def _binary(name: str, fallback: str) -> str:
    return shutil.which(name) or shutil.which(fallback) or f"/usr/sbin/{name}"


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _install(data: Path, tmp: Path) -> None:
    # --no-defaults: the machine's my.cnf describes its own server, not this one.
    argv = [_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={data}",
            f"--tmpdir={tmp}", "--auth-root-authentication-method=normal", "--skip-test-db",
            f"--user={_user()}"]
    done = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[:LOG_LINES]
        raise RuntimeError(f"mariadb-install-db exited with {done.returncode}:\n" + "\n".join(said))


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


def binlog_mariadb() -> contextlib.AbstractContextManager[PrivateMariaDB]:
    return private_mariadb("etl-mariadb-binlog-", BINLOG_OPTIONS)


@contextlib.contextmanager
def private_mariadb(prefix: str, options: Sequence[str]) -> Iterator[PrivateMariaDB]:
    """A running private server with BASE_OPTIONS and `options` (a later option wins) and an empty
    `test` database; stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    data, tmp = base / "data", base / "tmp"
    tmp.mkdir()
    try:
        _install(data, tmp)

        def start(_attempt: int) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()  # another process may take it before mariadbd binds it: retried
            argv = [_binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}", f"--port={port}",
                    "--bind-address=127.0.0.1", f"--socket={base / 'sock'}", f"--pid-file={base / 'pid'}",
                    f"--tmpdir={tmp}", f"--user={_user()}", *BASE_OPTIONS, *options]
            process, log_path = _spawn("mariadbd", argv, base)
            _wait_until(lambda: _answers(port), process, "mariadbd", log_path)
            return process, port

        process, port = _with_retries(start)
        try:
            engine = sa.create_engine(f"mysql+mysqldb://root@127.0.0.1:{port}/", isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
            engine.dispose()
            yield PrivateMariaDB(port, base, process)
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)
