"""A driver fetches the next rows while the last ones are converted (`read_ahead`); several readers
feed one consumer (`merged`)."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
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
        _put_unless_stopped(self._queue, item, self._stop)


def _put_unless_stopped(out: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put `item`, waiting for room, unless the consumer stops first (False: it did, item dropped)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def merged(streams: Sequence[Callable[[], Iterator[T]]], *, depth_per_stream: int = 2,
           name: str = "reader") -> Generator[T, None, None]:
    """The items of every stream, each stream iterated on its own thread, in arrival order (no
    order kept between streams). A stream's error is raised in the consumer; a consumer that stops
    early (or an error) stops every thread between two items and closes its iterator (so its
    connection) before this generator returns."""
    out: queue.Queue[object] = queue.Queue(maxsize=depth_per_stream * max(1, len(streams)))
    stop = threading.Event()
    threads = [threading.Thread(target=_drain, args=(stream, out, stop), name=f"{name}-{i}", daemon=True)
               for i, stream in enumerate(streams)]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            item = out.get()
            if item is _STREAM_END:
                running -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield item  # type: ignore[misc]
    finally:
        stop.set()
        while any(thread.is_alive() for thread in threads):  # unblock threads waiting to put
            with contextlib.suppress(queue.Empty):
                out.get(timeout=_POLL_S / 10)


_STREAM_END = object()  # a stream's last item on `merged`'s queue


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _drain(stream: Callable[[], Iterator[object]], out: queue.Queue[object], stop: threading.Event) -> None:
    put = functools.partial(_put_unless_stopped, out, stop=stop)
    try:
        items = stream()
        try:
            for item in items:
                if not put(item):
                    return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put(_STREAM_END)
    except BaseException as error:  # handed to the consumer, which raises it
        put(_Failed(error))
