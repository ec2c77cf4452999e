from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.emulators import Emulator
from tests.e2e.stack import Stack, make_settings
from tests.ops.endpoints import Endpoints, endpoints


@pytest.fixture
def alert_endpoints() -> Iterator[Endpoints]:
    """A Slack stand-in (HTTP) and an SMTP server, both on 127.0.0.1, fresh for the test."""
    yield from endpoints()


@pytest.fixture
def stack(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Stack:
    """Topics and subscriptions of unique names on the emulators (as tests/e2e's `stack`)."""
    return Stack(make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                               ETL_BATCH_SIZE=100, ETL_PART_ROWS=150))
