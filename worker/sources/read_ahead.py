"""A driver fetches the next rows while the last ones are converted: `read_ahead`."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

_POLL_S = 0.5  # how often a blocked put() checks whether the consumer stopped
T = TypeVar("T")


def read_ahead(fetch: Callable[[], T | None], *, depth: int = 2, name: str = "read-ahead") -> Iterator[T]:
    """The values fetch() returns until it returns None (or nothing truthy), fetched on a thread up
    to `depth` ahead of the consumer: a driver waiting on the network or building rows no longer
    waits for the conversion of the rows before. fetch()'s error is raised in the consumer; a
    consumer that stops early stops the thread before this generator returns, so whatever fetch()
    uses may be closed right after."""
    ahead = _ReadAhead(fetch, depth, name)
    try:
        yield from ahead
    finally:
        ahead.stop()


class _ReadAhead(Generic[T]):
    _END = object()

    def __init__(self, fetch: Callable[[], T | None], depth: int, name: str) -> None:
        self._fetch = fetch
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        while (item := self._queue.get()) is not self._END:
            yield item  # type: ignore[misc]
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a put() on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_POLL_S / 10)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._fetch()
                if not item:
                    break
                self._put(item)
        except BaseException as error:  # handed to the consumer
            self._error = error
        self._put(self._END)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
