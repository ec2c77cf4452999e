"""The background part loader: order, bounded queue, errors raised in the extracting thread.

Deterministic: the loads are held on events and the loader's queue records, under its own lock,
every part put in and taken out, so each test states the exact order of what happened. A wait has
a bound only so that broken code fails the test instead of hanging it (`GUARD_S`), never to let
something happen meanwhile.
"""

from __future__ import annotations

import queue
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from worker import part_loader
from worker.part_loader import BackgroundLoader

GUARD_S = 10.0
DONE = ""  # the name of the loader's end-of-parts marker (an empty Path)


class RecordingQueue(queue.Queue[Path]):
    """The loader's queue, recording ("put", name) and ("get", name) as they happen (under the
    queue's lock), and ("blocked", name) once when a part is offered while the queue is full (not
    the end marker: whether finish() finds the last part still queued is up to the scheduler)."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.timeline: list[tuple[str, str]] = []
        self.on_blocked: Callable[[Path], None] = lambda _part: None
        self.on_put: Callable[[Path], None] = lambda _part: None

    def put(self, item: Path, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            full = 0 < self.maxsize <= self._qsize() and item.name != DONE
            first = ("blocked", item.name) not in self.timeline  # submit() offers again each poll
            if full and first:
                self.timeline.append(("blocked", item.name))
        if full and first:
            self.on_blocked(item)
        super().put(item, block, timeout)

    def _put(self, item: Path) -> None:
        super()._put(item)
        self.timeline.append(("put", item.name))
        self.on_put(item)

    def _get(self) -> Path:
        item = super()._get()
        self.timeline.append(("get", item.name))
        return item


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingQueue]]:
    """Every queue a BackgroundLoader makes in this test, recording."""
    made: list[RecordingQueue] = []

    def make(maxsize: int = 0) -> RecordingQueue:
        made.append(RecordingQueue(maxsize))
        return made[-1]

    monkeypatch.setattr(part_loader, "queue", types.SimpleNamespace(
        Queue=make, Full=queue.Full, Empty=queue.Empty))
    yield made


class Held:
    """A load that records each part it loaded and, for the parts named, says it started and
    waits for their release."""

    def __init__(self, *names: str) -> None:
        self.started = {name: threading.Event() for name in names}
        self.release = {name: threading.Event() for name in names}
        self.loaded: list[str] = []

    def __call__(self, part: Path) -> None:
        if part.name in self.started:
            self.started[part.name].set()
            assert self.release[part.name].wait(GUARD_S), f"{part.name} was never released"
        self.loaded.append(part.name)


def test_parts_load_in_order_and_finish_waits_for_all(queues: list[RecordingQueue]) -> None:
    # Given loads held until finish() has handed over the end marker: no part is loaded before
    gate = threading.Event()
    loaded: list[str] = []

    def load(part: Path) -> None:
        assert gate.wait(GUARD_S)
        loaded.append(part.name)

    with BackgroundLoader(load, max_pending=5) as loader:
        (pending,) = queues
        pending.on_put = lambda part: gate.set() if part.name == DONE else None
        for i in range(5):
            loader.submit(Path(f"part-{i}"))
        assert loaded == []
        # When finish() returns
        loader.finish()
        # Then every part was loaded, in order
        assert loaded == [f"part-{i}" for i in range(5)]
    assert loaded == [f"part-{i}" for i in range(5)]


def test_extraction_waits_when_max_pending_parts_wait(queues: list[RecordingQueue]) -> None:
    # Given a loader whose first load is held, and one part waiting behind it (max_pending=1)
    load = Held("loading")
    with BackgroundLoader(load, max_pending=1) as loader:
        (pending,) = queues
        # The third part is offered while the queue is full: only then is the first load let go
        pending.on_blocked = lambda _part: load.release["loading"].set()
        loader.submit(Path("loading"))
        assert load.started["loading"].wait(GUARD_S)
        loader.submit(Path("waiting"))
        loader.submit(Path("third"))
        load.release["loading"].set()  # in case the third was accepted without blocking
        loader.finish()
    # Then the third part was refused until the loader took the waiting one: the spool holds at
    # most the part being written, one waiting and one loading
    assert pending.timeline == [
        ("put", "loading"), ("get", "loading"), ("put", "waiting"),
        ("blocked", "third"), ("get", "waiting"), ("put", "third"),
        ("get", "third"), ("put", DONE), ("get", DONE),
        ("put", DONE),  # leaving the block: the marker that would wake a loader still waiting
    ]
    assert load.loaded == ["loading", "waiting", "third"]


def _wait_stopped(loader: BackgroundLoader) -> None:
    """Until the loader's thread has ended (it records the error before it ends)."""
    loader._thread.join(GUARD_S)
    assert not loader._thread.is_alive()


def test_a_load_error_is_raised_at_the_next_submit(queues: list[RecordingQueue]) -> None:
    def load(part: Path) -> None:
        if part.name == "bad":
            raise ValueError("load failed")

    with BackgroundLoader(load) as loader:
        loader.submit(Path("bad"))
        _wait_stopped(loader)
        # The very next submit raises the load's error, and the part is never queued
        with pytest.raises(ValueError, match="load failed"):
            loader.submit(Path("next"))
    assert ("put", "next") not in queues[0].timeline


def test_a_load_error_is_raised_at_finish(queues: list[RecordingQueue]) -> None:
    # Given the failing load has not happened yet when finish() is called
    load = Held("bad")

    def failing(part: Path) -> None:
        load(part)
        raise ValueError("load failed")

    with BackgroundLoader(failing) as loader:
        (pending,) = queues
        pending.on_put = lambda part: load.release["bad"].set() if part.name == DONE else None
        loader.submit(Path("bad"))
        # Then finish() waits for it and raises its error
        with pytest.raises(ValueError, match="load failed"):
            loader.finish()


def test_leaving_on_an_error_stops_the_loader_after_the_load_in_flight(
    queues: list[RecordingQueue],
) -> None:
    # Given part a loading (held) and b, c waiting
    load = Held("a")
    with pytest.raises(RuntimeError, match="extraction failed"), BackgroundLoader(
        load, max_pending=2
    ) as loader:
        (pending,) = queues
        # a is let go only once leaving has emptied the queue and left the end marker
        pending.on_put = lambda part: load.release["a"].set() if part.name == DONE else None
        loader.submit(Path("a"))
        assert load.started["a"].wait(GUARD_S)
        loader.submit(Path("b"))
        loader.submit(Path("c"))
        raise RuntimeError("extraction failed")
    # Then a (in flight) was loaded, b and c were dropped from the queue, not loaded
    assert load.loaded == ["a"]
    assert pending.timeline == [
        ("put", "a"), ("get", "a"), ("put", "b"), ("put", "c"),
        ("get", "b"), ("get", "c"), ("put", DONE),
    ]


