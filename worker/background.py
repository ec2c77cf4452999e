"""A run's staging is prepared while its extraction starts: `Background`.

Opening a table's staging is a handful of BigQuery calls made once per run: the dataset and ledger
if missing, the destination created or widened, its heads row, the staging table. On the emulator
that is ~0.1 s; on BigQuery each DDL statement or DML row takes about a second. Nothing of it is
needed before the first part is loaded, so one thread makes the same calls, in the same order
(a job's tables one after another), while the source starts streaming; a table's part loader
waits for it before its first load (`TableRun.staging`), and so does the commit.

A failure is raised where the result is needed, with its own type, so the handler decides the
message's fate as before; the runner waits for the thread before it drops whatever staging was
opened, so none is left behind or dropped while being made.

The ledger look-up (is the run committed already?) stays before the source is opened: overlapping
it would open a source session for every redelivery of a committed run, which by design never
touches the source (tests/unit/test_jobs.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from worker import tracing

T = TypeVar("T")


class Background(Generic[T]):
    """Runs `call` on its own thread at once; `result()` waits for it and returns or raises."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        # In the run's trace context: the BigQuery jobs it starts carry the run's trace id.
        self._thread = threading.Thread(target=tracing.in_this_context(self._run), name=name, daemon=True)
        self._thread.start()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error was

    def settle(self) -> None:
        """Wait without raising: before cleaning up after another error."""
        self._thread.join()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as error:  # raised where the result is needed
            self._error = error
