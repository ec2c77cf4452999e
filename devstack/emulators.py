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
from typing import Protocol, TypeVar

from devstack.pubsub_jvm import OPTS_ENV, ClassArchive, jvm_options

STARTUP_TIMEOUT_S = 90.0
STARTUP_ATTEMPTS = 3  # a port chosen by free_ports() can be taken before the emulator binds it
STOP_TIMEOUT_S = 10.0
# A JVM writing its class archive as it exits gets longer before SIGKILL: the dump takes a few
# seconds on a quiet machine and far more on a loaded one, and a killed dump is thrown away.
ARCHIVING_STOP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Emulator:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path
    scratch_dirs: tuple[Path, ...] = ()
    class_archive: tuple[ClassArchive, Path] | None = None  # written by the JVM as it exits

    def stop(self) -> None:
        stop_process(self.process, ARCHIVING_STOP_TIMEOUT_S if self.class_archive else STOP_TIMEOUT_S)
        for path in self.scratch_dirs:
            shutil.rmtree(path, ignore_errors=True)
        if self.class_archive:
            archive, pending = self.class_archive
            archive.adopt(pending)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class ChildProcess(Protocol):
    """The part of subprocess.Popen's interface that stopping a child needs (the test suites' forked
    workers have it too: tests/forkserver.py)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def stop_process(process: ChildProcess, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Terminate a child and its whole process group (gcloud starts java as a grandchild).

    Returns once no process of the group is left, so nothing outlives the caller's fixture.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    _reap_group(process.pid, timeout_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a foreign process reused the id
        return False
    return True


def _reap_group(pgid: int, timeout_s: float) -> None:
    """Wait for the rest of the group (the leader is gone); SIGKILL whatever lingers, then give up
    (a zombie that nobody reaps still counts as a member)."""
    deadline = time.monotonic() + timeout_s
    killed = False
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            if killed:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout_s
        time.sleep(0.05)


def _spawn(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
    stop_grace_s: float = STOP_TIMEOUT_S,
) -> tuple[subprocess.Popen[bytes], Path]:
    """`argv` as the leader of a new process group, behind devstack.reaper: the group goes down
    with the calling thread's process, even if that is killed before it can stop the emulator."""
    log_path = log_dir / f"{name}.log"
    reaper = [sys.executable, "-m", "devstack.reaper", str(os.getpid()), f"--grace={stop_grace_s:g}"]
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [*reaper, *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    return process, log_path


_Started = TypeVar("_Started")


class _ExitedEarly(RuntimeError):
    """The emulator process ended during start-up (typically: its port was taken meanwhile)."""


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, log_path: Path
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_process(process)
            raise _ExitedEarly(f"{name} exited with {process.returncode}; see {log_path}")
        if ready():
            if process.poll() is None:  # ours answered, not something else on that port
                return
            continue
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"{name} did not start within {STARTUP_TIMEOUT_S:.0f}s; see {log_path}")


def _with_retries(start: Callable[[int], _Started]) -> _Started:
    """`start(attempt)` again while the process exits during start-up (its port taken meanwhile)."""
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        try:
            return start(attempt)
        except _ExitedEarly:
            if attempt == STARTUP_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def pubsub_launcher() -> Path | None:
    """gcloud's copy of the emulator's own launcher script, if installed."""
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk = Path(gcloud).resolve().parent.parent
        launcher = sdk / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if launcher.is_file():
            return launcher
    return None


def _pubsub_command(project: str, port: int) -> tuple[list[str], Path | None]:
    """The emulator's own launcher when gcloud's copy is there (it execs java, which stays in our
    process group), else `gcloud beta emulators pubsub start` (then with a data dir to remove)."""
    launcher = pubsub_launcher()
    if launcher:
        return [str(launcher), "--host=127.0.0.1", f"--port={port}"], None
    gcloud = shutil.which("gcloud")
    data_dir = Path(tempfile.mkdtemp(prefix="pubsub-data-"))
    return [gcloud or "gcloud", "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}",
            f"--project={project}", f"--data-dir={data_dir}", "--quiet"], data_dir


def start_pubsub(project: str, log_dir: Path | None = None) -> Emulator:
    """The real gcloud Pub/Sub emulator; ready when its log says 'Server started'."""
    logs = log_dir or Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))

    def start(attempt: int) -> Emulator:
        (port,) = free_ports(1)
        argv, data_dir = _pubsub_command(project, port)
        scratch = (data_dir,) if data_dir else ()
        name = "pubsub-emulator" if attempt == 1 else f"pubsub-emulator-{attempt}"
        opts, archive = jvm_options(pubsub_launcher())
        grace_s = ARCHIVING_STOP_TIMEOUT_S if archive else STOP_TIMEOUT_S  # the reaper's too
        process, log_path = _spawn(name, argv, logs, {OPTS_ENV: opts}, grace_s)

        def ready() -> bool:
            return "Server started" in log_path.read_text(errors="replace")

        try:
            _wait_until(ready, process, "Pub/Sub emulator", log_path)
        except BaseException:
            for path in scratch:
                shutil.rmtree(path, ignore_errors=True)
            if archive:
                archive[1].unlink(missing_ok=True)
            raise
        return Emulator("pubsub", f"127.0.0.1:{port}", process, log_path, scratch, archive)

    return _with_retries(start)


def install_duckdb_spatial() -> None:
    """bqemulator loads DuckDB's spatial extension and would download it: install the bundled copy."""
    import duckdb
    import duckdb_extension_spatial

    base = Path(duckdb_extension_spatial.__file__).parent
    found = glob.glob(str(base / "**" / "spatial.duckdb_extension"), recursive=True)
    if not found:
        raise RuntimeError("duckdb-extension-spatial is installed without its extension file")
    duckdb.connect().execute(f"INSTALL '{found[0]}'")


def start_bigquery(project: str, log_dir: Path | None = None, time_travel: bool = False) -> Emulator:
    """bqemulator (REST + gRPC, in memory); ready when its REST port answers. Without
    `time_travel`, it skips copying a table after each write (devstack/bqemulator_main.py)."""
    install_duckdb_spatial()
    logs = log_dir or Path(tempfile.mkdtemp(prefix="bq-emulator-"))
    exe = ([str(Path(sys.executable).with_name("bqemulator"))] if time_travel
           else [sys.executable, "-m", "devstack.bqemulator_main"])

    def start(attempt: int) -> Emulator:
        rest_port, grpc_port = free_ports(2)
        argv = [*exe, "start", "--project", project, "--rest-port", str(rest_port),
                "--grpc-port", str(grpc_port), "--log-level", "warning"]
        name = "bq-emulator" if attempt == 1 else f"bq-emulator-{attempt}"
        process, log_path = _spawn(name, argv, logs)
        url = f"http://127.0.0.1:{rest_port}/bigquery/v2/projects/{project}/datasets"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _wait_until(ready, process, "BigQuery emulator", log_path)
        return Emulator("bigquery", f"127.0.0.1:{rest_port}", process, log_path)

    return _with_retries(start)


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
