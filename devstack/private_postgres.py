"""A throwaway PostgreSQL cluster with the settings a test needs that the machine's server lacks
(`wal_level=logical` for CDC, password checks for secrets). initdb and postgres run as the
`postgres` user when we run as root (initdb refuses root); a temporary datadir that also holds the
Unix socket; a free port on 127.0.0.1; fsync off; stopped (immediate) and removed on exit."""

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

from devstack.emulators import free_port

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
    data, port = base / "data", free_port()
    _run([_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", *auth, "--no-sync"])
    options = " ".join([f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                        *(f"-c {setting}" for setting in settings)])
    _run([_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"])
    try:
        yield Cluster(port, base)
    finally:
        _run([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)
