"""The background part loader: order, bounded queue, errors raised in the extracting thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from worker.part_loader import BackgroundLoader


def test_parts_load_in_order_and_finish_waits_for_all() -> None:
    loaded: list[Path] = []
    with BackgroundLoader(lambda part: (time.sleep(0.01), loaded.append(part))) as loader:
        for i in range(5):
            loader.submit(Path(f"part-{i}"))
        loader.finish()
    assert loaded == [Path(f"part-{i}") for i in range(5)]


def test_extraction_waits_when_max_pending_parts_wait() -> None:
    # Given a loader stuck on its first part
    release = threading.Event()
    with BackgroundLoader(lambda _part: release.wait(), max_pending=1) as loader:
        loader.submit(Path("loading"))
        loader.submit(Path("waiting"))
        blocked = threading.Thread(target=loader.submit, args=(Path("third"),))
        blocked.start()
        # Then a third part is not accepted: the spool holds at most writing + waiting + loading
        blocked.join(timeout=0.3)
        assert blocked.is_alive()
        release.set()
        blocked.join(timeout=5)
        loader.finish()


def test_a_load_error_is_raised_at_the_next_submit_or_finish() -> None:
    def load(part: Path) -> None:
        if part.name == "bad":
            raise ValueError("load failed")

    with BackgroundLoader(load) as loader:
        loader.submit(Path("bad"))
        with pytest.raises(ValueError, match="load failed"):
            for _ in range(100):  # the error arrives once the loader has run
                loader.submit(Path("next"))
                time.sleep(0.01)
    with BackgroundLoader(load) as loader:
        loader.submit(Path("bad"))
        with pytest.raises(ValueError, match="load failed"):
            loader.finish()


def test_leaving_on_an_error_stops_the_loader_after_the_load_in_flight() -> None:
    loaded: list[str] = []
    with pytest.raises(RuntimeError, match="extraction failed"), BackgroundLoader(
        lambda part: (time.sleep(0.05), loaded.append(part.name)), max_pending=2
    ) as loader:
        for name in ("a", "b", "c"):
            loader.submit(Path(name))
        raise RuntimeError("extraction failed")
    assert len(loaded) <= 1  # the queued parts were dropped, not loaded
