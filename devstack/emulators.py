"""Start and stop the local emulators (gcloud Pub/Sub emulator, bqemulator) on free ports.

Used by the test fixtures and by `make demo`; each emulator is a child process that dies with us.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Emulator:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate a child and its process group (gcloud starts java as a grandchild)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)


def _spawn(name: str, argv: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return process, log_path


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, log_path: Path
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log_path}")
        if ready():
            return
        time.sleep(0.2)
    stop_process(process)
    raise RuntimeError(f"{name} did not start within {STARTUP_TIMEOUT_S:.0f}s; see {log_path}")


def start_pubsub(project: str, log_dir: Path | None = None) -> Emulator:
    """The real gcloud Pub/Sub emulator; ready when its log says 'Server started'."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="pubsub-data-")
    gcloud = shutil.which("gcloud") or "gcloud"
    argv = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
            f"--project={project}", f"--data-dir={data_dir}", "--quiet"]
    process, log_path = _spawn("pubsub-emulator", argv, log_dir)

    def ready() -> bool:
        return "Server started" in log_path.read_text(errors="replace")

    _wait_until(ready, process, "Pub/Sub emulator", log_path)
    return Emulator("pubsub", f"127.0.0.1:{port}", process, log_path)


def install_duckdb_spatial() -> None:
    """bqemulator loads DuckDB's spatial extension and would download it: install the bundled copy."""
    import duckdb
    import duckdb_extension_spatial

    base = Path(duckdb_extension_spatial.__file__).parent
    found = glob.glob(str(base / "**" / "spatial.duckdb_extension"), recursive=True)
    if not found:
        raise RuntimeError("duckdb-extension-spatial is installed without its extension file")
    duckdb.connect().execute(f"INSTALL '{found[0]}'")


def start_bigquery(project: str, log_dir: Path | None = None) -> Emulator:
    """bqemulator (REST + gRPC, in memory); ready when its REST port answers."""
    install_duckdb_spatial()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bq-emulator-"))
    rest_port, grpc_port = free_port(), free_port()
    exe = str(Path(sys.executable).with_name("bqemulator"))
    argv = [exe, "start", "--project", project, "--rest-port", str(rest_port),
            "--grpc-port", str(grpc_port), "--log-level", "warning"]
    process, log_path = _spawn("bq-emulator", argv, log_dir)
    url = f"http://127.0.0.1:{rest_port}/bigquery/v2/projects/{project}/datasets"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait_until(ready, process, "BigQuery emulator", log_path)
    return Emulator("bigquery", f"127.0.0.1:{rest_port}", process, log_path)


@contextlib.contextmanager
def running(project: str, log_dir: Path | None = None) -> Iterator[tuple[Emulator, Emulator]]:
    """Both emulators for the duration of the block."""
    pubsub = start_pubsub(project, log_dir)
    try:
        bigquery = start_bigquery(project, log_dir)
        try:
            yield pubsub, bigquery
        finally:
            bigquery.stop()
    finally:
        pubsub.stop()
