"""A throwaway PostgreSQL cluster with the settings a test needs that the machine's server lacks
(`wal_level=logical` for CDC, password checks for secrets). initdb and postgres run as the
`postgres` user when we run as root (initdb refuses root); a temporary datadir that also holds the
Unix socket; a free port on 127.0.0.1; fsync off; stopped (immediate) and removed on exit.

`postgres` runs in the foreground as a child of devstack.reaper (devstack/emulators.py), not
daemonized by `pg_ctl start`: a test process killed before its fixture could stop the server
(SIGKILL, a crashed xdist worker) takes it down too, where a daemonized server outlived it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.emulators import _spawn, _wait_until, _with_retries, free_port, stop_process

COMMAND_TIMEOUT_S = 120


@dataclass(frozen=True)
class Cluster:
    port: int
    base: Path  # the datadir's parent and the Unix socket's directory


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], check: bool = True) -> None:
    subprocess.run(_as_postgres(argv), check=check, capture_output=True, timeout=COMMAND_TIMEOUT_S)


@contextlib.contextmanager
def private_cluster(prefix: str, auth: Sequence[str], settings: Sequence[str] = ()) -> Iterator[Cluster]:
    """`auth`: initdb's authentication options; `settings`: `name=value` server settings."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data = base / "data"
    _run([_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", *auth, "--no-sync"])

    def start(_attempt: int) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()  # another process may take it before postgres binds it: retried
        argv = [_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                *(part for setting in settings for part in ("-c", setting))]
        process, log_path = _spawn("postgres", _as_postgres(argv), base)
        _wait_until(lambda: _answers(port), process, "postgres", log_path)
        return process, port

    try:
        process, port = _with_retries(start)
        try:
            yield Cluster(port, base)
        finally:
            _run([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
            stop_process(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _answers(port: int) -> bool:
    ready = [_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"]
    return subprocess.run(ready, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False).returncode == 0
