"""`python -m MODULE ...` processes forked from one interpreter that has already imported the worker.

The crash and lifecycle suites start about two hundred `python -m worker serve` processes, and each
spent ~1 s of CPU importing google-cloud-pubsub, grpc, BigQuery, SQLAlchemy and pyarrow before
doing anything: on a 2-core machine that was the suite's largest single cost. Here a zygote (`python
-m tests.forkserver`, one per test process, started on first use) imports what `worker serve`
imports, once, and forks a child per request. The child is what the tests see of a worker: its own
pid and session (killed, signalled and reaped like any child), the environment and working
directory given, stdin from /dev/null, stdout and stderr into the log given, then `runpy` runs the
module as `-m` would, and the interpreter exits as usual (atexit, non-daemon threads joined) with
the module's exit code.

Forking is safe because the zygote has one thread and opens nothing before it forks: no grpc
channel, no connection pool, no Arrow allocation (it checks the thread count after its imports).
The difference from a fresh interpreter is only what import time did: module state set at import
is the zygote's (the worker reads its environment when it runs, not when imported), and `random`
is seeded again in each child. `ETL_TEST_SPAWN=1` starts real interpreters instead (`spawn`).

Protocol, one JSON object per line: the test writes {"id", "argv", "env", "cwd", "stdin", "stdout",
"stderr"} (paths; the parent creates the output files, the child appends) on the
zygote's stdin; the zygote answers {"id", "pid"} (or {"id", "error"}) and, when a child ends,
{"id", "code"} (`os.waitstatus_to_exitcode`: -9 for SIGKILL, as subprocess reports it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import runpy
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack.emulators import ChildProcess

ROOT = Path(__file__).resolve().parent.parent
SPAWN_ENV = "ETL_TEST_SPAWN"
# What `worker serve` (and the other commands the suites run) import: the zygote pays for it once.
PRELOAD = ("worker.cli", "worker.app", "worker.subscriber", "worker.events", "worker.history",
           "worker.sources.postgresql", "worker.sources.mysql", "worker.sources.mysql_raw",
           "worker.sources.pg_copy", "google.cloud.pubsub_v1", "google.cloud.bigquery", "MySQLdb",
           "psycopg2")


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> ChildProcess:
    """`argv` (`[sys.executable, "-m", module, ...]`) with stdout and stderr appended to `log_path`,
    stdin from /dev/null, in a new session."""
    return _start(argv, env, Path(os.devnull), log_path, log_path)


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, input: str | None = None,
        timeout: float = 120.0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run(argv, env=env, input=input, capture_output=True, text=True, timeout=timeout,
    check=False), the child forked (a timeout kills it and raises TimeoutExpired, as there)."""
    with tempfile.TemporaryDirectory(prefix="forked-") as scratch:
        stdin, stdout, stderr = (Path(scratch) / name for name in ("stdin", "stdout", "stderr"))
        stdin.write_text(input or "")
        child = _start(argv, dict(env if env is not None else os.environ), stdin, stdout, stderr, cwd)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout)
            raise
        return subprocess.CompletedProcess(list(argv), code, stdout.read_text(), stderr.read_text())


def _start(argv: Sequence[str], env: Mapping[str, str], stdin: Path, stdout: Path, stderr: Path,
           cwd: Path | None = None) -> ChildProcess:
    """Forked from the zygote, or a real interpreter under ETL_TEST_SPAWN=1 (or for a command that
    is not `python -m MODULE`)."""
    workdir = cwd or Path.cwd()
    if os.environ.get(SPAWN_ENV) == "1" or len(argv) < 3 or argv[1] != "-m":
        # The checkout on the path, as in the zygote: the project's modules resolve from any cwd.
        python_path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with stdin.open("rb") as source, stdout.open("ab") as out, stderr.open("ab") as err:
            return subprocess.Popen(list(argv), env={**env, "PYTHONPATH": python_path}, stdin=source,
                                    stdout=out, stderr=err, cwd=workdir, start_new_session=True)
    for path in (stdout, stderr):
        path.touch()  # there to read from the start, as with a spawned child
    return _zygote().fork({"argv": list(argv), "env": dict(env), "cwd": str(workdir),
                           "stdin": str(stdin), "stdout": str(stdout), "stderr": str(stderr)})


# --- the test's side -------------------------------------------------------------------------------
class ForkedProcess:
    """A child of the zygote, with the part of subprocess.Popen's interface the suites use."""

    def __init__(self, zygote: Zygote, request_id: int, pid: int) -> None:
        self.pid = pid
        self._zygote = zygote
        self._id = request_id

    @property
    def returncode(self) -> int | None:
        return self._zygote.exit_code(self._id)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._zygote.wait_exit(self._id, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"forked {self.pid}", timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # once reaped, the pid may be another process's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class Zygote:
    """The zygote process and a thread that reads its answers."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self._changed = threading.Condition()
        self._pids: dict[int, int | str] = {}
        self._codes: dict[int, int] = {}
        self._next_id = 0
        self._gone = False
        self._reader = threading.Thread(target=self._read, name="forkserver-reader", daemon=True)
        self._reader.start()

    def fork(self, child: dict[str, Any]) -> ForkedProcess:
        assert self._process.stdin is not None
        with self._changed:
            self._next_id += 1
            request_id = self._next_id
            self._process.stdin.write(json.dumps({**child, "id": request_id}).encode() + b"\n")
            self._process.stdin.flush()
            if not self._changed.wait_for(lambda: request_id in self._pids or self._gone, timeout=60):
                raise RuntimeError("the fork server did not answer within 60 s")
            answer = self._pids.get(request_id)
        if not isinstance(answer, int):
            raise RuntimeError(f"the fork server could not start {child['argv']}: {answer or 'it exited'}")
        return ForkedProcess(self, request_id, answer)

    def exit_code(self, request_id: int) -> int | None:
        with self._changed:
            return self._codes.get(request_id)

    def wait_exit(self, request_id: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: request_id in self._codes or self._gone, timeout)
            if request_id not in self._codes and self._gone:
                raise RuntimeError("the fork server exited before its child did")
            return self._codes.get(request_id)

    def close(self) -> None:
        """End of the test process: EOF tells the zygote to exit (its children live on, as
        subprocess's would; the fixtures stop them)."""
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            with self._changed:
                if "code" in message:
                    self._codes[message["id"]] = int(message["code"])
                else:
                    self._pids[message["id"]] = message.get("pid", message.get("error", "failed"))
                self._changed.notify_all()
        with self._changed:
            self._gone = True
            self._changed.notify_all()


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None:
            _ZYGOTE = Zygote()
            atexit.register(_ZYGOTE.close)
        return _ZYGOTE


# --- the zygote's side -----------------------------------------------------------------------------
def _serve() -> None:
    """Import, then fork a child per request until stdin ends; report each child's exit."""
    for module in PRELOAD:
        __import__(module)
    if threading.active_count() != 1:  # a thread would be lost in every child (and might hold a lock)
        raise RuntimeError(f"an import started a thread: {threading.enumerate()}")
    answers = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the answers
    wake_read, wake_write = os.pipe()
    for fd in (wake_read, wake_write):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # wakes select through the pipe
    children: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _events in selector.select():
            if key.fd == wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                continue
            data = os.read(0, 1 << 16)
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as exc:
                    _answer(answers, {"id": request["id"], "error": str(exc)})
                    continue
                if pid == 0:
                    selector.close()
                    _become(request, (answers, wake_read, wake_write))  # never returns
                children[pid] = request["id"]
                _answer(answers, {"id": request["id"], "pid": pid})
        _reap(children, answers)


def _reap(children: dict[int, int], answers: int) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request_id = children.pop(pid, None)
        if request_id is not None:
            _answer(answers, {"id": request_id, "code": os.waitstatus_to_exitcode(status)})


def _answer(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _become(request: dict[str, Any], zygote_fds: Sequence[int]) -> None:
    """In the child: become `python -m MODULE ARGS` as the request says; exits the interpreter."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in zygote_fds:
        os.close(fd)
    os.setsid()
    for fd, path, flags in ((0, request["stdin"], os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_APPEND),
                            (2, request["stderr"], os.O_WRONLY | os.O_APPEND)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    random.seed()
    module, args = request["argv"][2], request["argv"][3:]
    sys.argv = [module, *args]  # runpy sets argv[0] to the module's file, as -m does
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    sys.exit(0)  # a module that returns without SystemExit: as a script, exit 0


if __name__ == "__main__":
    _serve()
