"""Parts load while extraction goes on: `BackgroundLoader`.

Loading a part into staging (upload + load job) used to stop extraction for its whole duration; on
a large table that roughly doubled a run. One loader thread takes parts from a queue of at most
`max_pending` parts: extraction blocks when it gets that far ahead, so the spool holds at most the
part being written, the parts waiting and the one loading, whatever the table's size.

Parts are loaded one at a time, in order, so the sink's part numbers (and its deterministic job
ids) are the same as before. A failed load stops the loader; the error is raised in the extracting
thread at its next submit() or at finish(), and parts not loaded stay in the spool, which its
owner removes.
"""


from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from worker import tracing

log = logging.getLogger(__name__)

_DONE = Path()  # the end-of-parts marker: the loader stops after the parts before it
_POLL_S = 0.5  # how often a blocked submit() checks whether the loader died


class BackgroundLoader:
    """`submit` parts, then `finish` (waits for every load); use as a context manager."""

    def __init__(self, load: Callable[[Path], None], *, max_pending: int = 1) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._load = load
        self._queue: queue.Queue[Path] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        # The loads belong to the run's trace (their BigQuery jobs carry its id): the thread runs in
        # the trace context of the thread that made the loader.
        self._thread = threading.Thread(target=tracing.in_this_context(self._run), name="part-loader",
                                        daemon=True)
        self._thread.start()

    def submit(self, part: Path) -> None:
        """Queue a finished part; blocks while `max_pending` parts wait. Raises the loader's error."""
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(part, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every submitted part is loaded; raise the first load error."""
        self.submit(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundLoader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Normal exit went through finish(); on an error, stop after the load in flight (a load
        # job cannot be taken back) and leave the rest to the spool's cleanup.
        self._stop.set()
        _drain(self._queue)
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            part = self._queue.get()
            if part is _DONE:
                return
            try:
                self._load(part)
            except BaseException as error:  # handed to the extracting thread
                self._error = error
                self._stop.set()
                _drain(self._queue)
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stop.is_set() or not self._thread.is_alive():
            raise RuntimeError("the part loader has stopped")


def _drain(pending: queue.Queue[Path]) -> None:
    """Empty the queue, then leave the end marker so a loader waiting on get() wakes up and stops."""
    while True:
        try:
            pending.get_nowait()
        except queue.Empty:
            break
    with contextlib.suppress(queue.Full):  # just emptied; at worst a marker is already there
        pending.put_nowait(_DONE)
