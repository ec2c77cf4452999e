from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.emulators import Emulator
from tests.e2e.sources import SeededSource, fresh_database, seed
from tests.e2e.stack import Stack, make_settings


@pytest.fixture(params=["postgresql", "mysql"])
def orders_source(request: pytest.FixtureRequest) -> Iterator[SeededSource]:
    """`orders` with 250 rows, in a fresh PostgreSQL schema or MariaDB database."""
    yield seed(*fresh_database(request), 250)


@pytest.fixture
def stack(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Stack:
    settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                             ETL_BATCH_SIZE=100, ETL_PART_ROWS=150)
    return Stack(settings)
