"""The worker's Arrow memory pool: jemalloc unless ARROW_DEFAULT_MEMORY_POOL says otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from worker.memory import use_worker_memory_pool


@pytest.fixture(autouse=True)
def _restore_pool() -> Iterator[None]:
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_jemalloc_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.system_memory_pool())
    assert use_worker_memory_pool() == "jemalloc"


def test_the_operators_choice_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    pa.set_memory_pool(pa.system_memory_pool())
    assert use_worker_memory_pool() == "system"
