"""The fork server the suites start workers from (tests/forkserver.py): each child must look like a
fresh `python -m MODULE` process to the test, except that the worker is imported already."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forkserver

PROBE = [sys.executable, "-m", "tests.unit.forkserver_probe"]


def test_a_forked_child_has_its_own_session_environment_streams_and_exit_code(tmp_path: Path) -> None:
    done = [forkserver.run([*PROBE, str(code)], env={**os.environ, "PROBE": f"p{code}"}, input="in",
                           cwd=tmp_path) for code in (0, 3)]
    first, second = (json.loads(result.stdout) for result in done)
    assert [result.returncode for result in done] == [0, 3]
    assert all(result.stderr == "to stderr\n" for result in done)
    assert first["pid"] != second["pid"] and first["session"] == first["pid"]  # a new session each
    assert (first["probe"], second["probe"]) == ("p0", "p3") and first["argv"] == ["0"]
    assert first["cwd"] == str(tmp_path) and first["stdin"] == "in" and first["threads"] == 1
    assert first["random"] != second["random"]  # seeded again in each child
    assert first["worker_imported"] is (os.environ.get(forkserver.SPAWN_ENV) != "1")


def test_a_killed_child_reports_the_signal_as_subprocess_does(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    child = forkserver.spawn([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"],
                             dict(os.environ), log)
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL == child.returncode
    child.send_signal(signal.SIGKILL)  # once reaped: nothing to signal, no error
    assert log.exists()


def test_a_timeout_kills_the_child_and_raises_as_subprocess_run_does() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0"], timeout=1.0)
