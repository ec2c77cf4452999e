"""`python -m devstack.reaper PARENT_PID [--grace=SECONDS] CMD...`: run CMD, and take its whole
process group down when PARENT_PID dies, however it dies (SIGKILL, a crashed pytest-xdist worker, `timeout`).

The emulators start through it, each as the leader of a new session (so that `stop_process` can
signal the group). A new session also escapes the terminal's and the test run's signals, so without
this a killed run would leave its java and bqemulator processes behind. Linux only: the kernel sends
PR_SET_PDEATHSIG's signal to the reaper when the thread that started it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

PR_SET_PDEATHSIG = 1
GRACE_S = 10.0  # after SIGTERM, before SIGKILL (--grace: a JVM writing its class archive needs more)


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    parent, command, grace_s = int(argv[0]), argv[1:], GRACE_S
    if command and command[0].startswith("--grace="):
        grace_s, command = float(command[0].removeprefix("--grace=")), command[1:]
    child: list[subprocess.Popen[bytes]] = []
    groups = [os.getpgid(0)]  # ours, and the child's if it makes its own (gcloud does)
    stopping: list[float] = []

    def signal_groups(signum: int) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(child[0].pid) not in groups:
                    groups.append(os.getpgid(child[0].pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signum)

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic() + grace_s)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # our own killpg must not re-enter
            signal_groups(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    _die_with(parent)
    if stopping:
        return 1
    child.append(subprocess.Popen(command))
    while child[0].poll() is None:
        if stopping and time.monotonic() > stopping[0]:
            break
        time.sleep(0.1)
    if stopping:  # whatever is left (a grandchild that outlives its parent) goes now, then us
        signal_groups(signal.SIGKILL)
    return child[0].returncode if child[0].returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
