"""The dead-letter actions: replay (the worker's CLI, `etl-worker replay --run-id ID`) and a new run
with the job's current settings.

Replay needs the worker's own settings (project, topic names), so it is the worker's CLI that does
it, never Django reimplementing it. With settings.ETL['REPLAY_COMMAND'] set, Django runs it; without,
it shows the command for an operator. Either way the run's state follows the events: run.replayed,
then the new attempt's.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass

from etl.conf import etl_setting
from etl.models import Run, RunState
from etl.publisher import request_run

REPLAY_TIMEOUT_S = 180
DEFAULT_COMMAND = ("etl-worker",)
# The CLI's summary line, e.g. "2 dead-lettered request(s); 1 replayed". It exits 0 also when the
# selection matched nothing (the dead letter may not have reached the hold subscription yet).
_REPLAYED = re.compile(r"; (\d+) replayed")


@dataclass(frozen=True)
class ReplayResult:
    command: str
    ran: bool
    returncode: int | None = None
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.ran and self.returncode == 0

    @property
    def replayed(self) -> int:
        """How many dead letters the CLI republished (0 if it did not run or failed)."""
        found = _REPLAYED.search(self.output) if self.ok else None
        return int(found.group(1)) if found else 0


def replay_argv(run: Run) -> list[str]:
    prefix = list(etl_setting("REPLAY_COMMAND")) or list(DEFAULT_COMMAND)
    return [*prefix, "replay", "--run-id", str(run.run_id)]


def replay(run: Run) -> ReplayResult:
    """Run (or show) the replay of one dead-lettered run. The CLI prints no secrets (it redacts)."""
    if run.state != RunState.DEAD_LETTERED or not run.run_id:
        raise ValueError(f"{run} is {run.state}, not dead-lettered")
    argv = replay_argv(run)
    shown = shlex.join(argv)
    if not etl_setting("REPLAY_COMMAND"):
        return ReplayResult(command=shown, ran=False)
    env = {**os.environ, **etl_setting("REPLAY_ENV")}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S,
                          check=False)
    return ReplayResult(command=shown, ran=True, returncode=done.returncode,
                        output=(done.stdout + done.stderr)[-4000:])


def new_run_with_current_settings(run: Run) -> Run:
    """A fresh Run (a new etl_run_id) of the failed or dead-lettered run's job, as it is configured
    now; the old run keeps its history."""
    if run.job is None:
        raise ValueError(f"{run} belongs to no job")
    return request_run(run.job)
