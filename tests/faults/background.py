"""Threads that work beside the runs of a fault test (writers changing the source, a reader of the
destination) until the test stops them; an exception ends one and is kept for the test to report."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator

import sqlalchemy as sa


class Loop(threading.Thread):
    """Calls `once()` until `stop` is set; the exception that ended it is `error`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.once()
        except BaseException as exc:  # surfaced by the test
            self.error = exc
            self.ended_by_error()

    def once(self) -> None:
        raise NotImplementedError

    def ended_by_error(self) -> None:
        """What a waiting test needs to hear when the loop ends by an error (nothing, by default)."""


class TableWriter(Loop):
    """Changes one source table, each change in a transaction stamped by the database's clock."""

    def __init__(self, engine: sa.Engine, table: str, clock_sql: str, rng: random.Random) -> None:
        super().__init__()
        self.engine, self.table, self.clock_sql, self.rng = engine, table, clock_sql, rng
        self.next_id = 1


@contextlib.contextmanager
def running(loop: Loop, join_timeout_s: float = 10) -> Iterator[Loop]:
    """`loop` started for the block, stopped and joined after it; its error fails the test."""
    loop.start()
    try:
        yield loop
    finally:
        loop.stop.set()
        loop.join(timeout=join_timeout_s)
    assert loop.error is None, loop.error
