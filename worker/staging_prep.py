"""A job's staging is prepared while its extraction starts: `StagingPrep`.

Opening a table's staging is a handful of BigQuery calls made once per run: the dataset and ledger
if missing, the destination created or widened, its heads row, the staging table. On the emulator
that is ~0.1 s; on BigQuery each DDL statement or DML row takes about a second. Nothing of it is
needed before the first part is loaded, so one thread makes the same calls, in the same order
(the tables of a job one after another), while the source starts streaming; a table's part loader
waits for it before its first load (`TableRun.staging`).

What is committed does not change: the commit needs every table's staging, so it waits too. A
failure is raised where the staging is first needed (the first load, or the commit) with its own
type, so the handler decides the message's fate as before; and the runner waits for the thread
before it drops whatever staging was opened, so none is left behind or dropped while being made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from worker import tracing


class StagingPrep:
    """Runs `prepare` on its own thread at once; `wait()` returns when it is done or raises its error."""

    def __init__(self, prepare: Callable[[], None]) -> None:
        self._prepare = prepare
        self._error: BaseException | None = None
        # In the run's trace context: the BigQuery jobs it starts carry the run's trace id.
        self._thread = threading.Thread(target=tracing.in_this_context(self._run), name="staging-prep",
                                        daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def settle(self) -> None:
        """Wait without raising: before cleaning up after another error."""
        self._thread.join()

    def _run(self) -> None:
        try:
            self._prepare()
        except BaseException as error:  # raised where the staging is needed
            self._error = error

