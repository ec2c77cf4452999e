"""Fixtures of the crash suites: a stack with short leases, the held commit, worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.emulators import Emulator
from tests.e2e.conftest import orders_source
from tests.e2e.stack import Stack, settings_env, settings_from_env
from tests.faults.harness import CommitHold, workers

__all__ = ["orders_source", "workers"]


@pytest.fixture
def crash_stack(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Stack:
    env = settings_env(
        pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
        ETL_BATCH_SIZE=100, ETL_PART_ROWS=150,  # 250 rows: 3 batches, 2 parts
        ETL_MAX_DELIVERY_ATTEMPTS=20,  # kills use up attempts; recovery must not dead-letter
    )
    return Stack(settings_from_env(env), env)


@pytest.fixture
def commit_hold(tmp_path: Path, bq_dataset: str) -> Iterator[CommitHold]:
    """Torn down before `bq_dataset`: a job still held would block the emulator's every answer."""
    hold = CommitHold(tmp_path / "hold")
    try:
        yield hold
    finally:
        hold.release()
