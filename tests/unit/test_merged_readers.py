"""`read_ahead.merged`: several readers into one consumer, errors and early stops included."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from worker.sources.read_ahead import merged


def _numbers(start: int, count: int, closed: list[int] | None = None) -> Callable[[], Iterator[int]]:
    def stream() -> Iterator[int]:
        try:
            yield from range(start, start + count)
        finally:
            if closed is not None:
                closed.append(start)

    return stream


def test_every_item_of_every_stream_arrives_once() -> None:
    # Given three streams, when merged, then every item arrives exactly once
    got = list(merged([_numbers(0, 100), _numbers(1000, 50), _numbers(5000, 0)], depth_per_stream=1))
    assert sorted(got) == [*range(100), *range(1000, 1050)]


def test_a_stream_error_is_raised_in_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("reader lost its connection")

    with pytest.raises(ValueError, match="lost its connection"):
        list(merged([failing, _numbers(10, 1000)]))


def test_a_consumer_stopping_early_closes_every_stream() -> None:
    # Given streams longer than the queue, when the consumer stops after one item, then every
    # reader thread has ended and closed its iterator before the generator returns
    closed: list[int] = []
    items = merged([_numbers(0, 10_000, closed), _numbers(100_000, 10_000, closed)], depth_per_stream=1)
    assert next(items) is not None
    items.close()
    assert sorted(closed) == [0, 100_000]
    assert not [t for t in threading.enumerate() if t.name.startswith("reader-")]
