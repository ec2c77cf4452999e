"""Running the worker once, as `etl-worker run` does: the real handler, runner, sources and sink,
events kept in memory, against the BigQuery emulator (no Pub/Sub needed)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.emulators import Emulator
from tests.conftest import unique
from tests.e2e.stack import make_settings
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery, Outcome
from worker.messages import Event, RunCompleted, RunFailed

_RUN_IDS = itertools.count(1)


@dataclass(frozen=True)
class WorkerRun:
    outcome: Outcome
    events: list[Event]

    @property
    def completed(self) -> RunCompleted:
        (event,) = [e for e in self.events if isinstance(e, RunCompleted)]
        return event

    @property
    def failed(self) -> RunFailed:
        (event,) = [e for e in self.events if isinstance(e, RunFailed)]
        return event


RunWorker = Callable[..., WorkerRun]


@pytest.fixture
def run_worker(bq_emulator: Emulator, bq_dataset: str) -> RunWorker:
    """Handle one request body; small batches and parts so that counts cross batch boundaries."""
    settings = make_settings(
        "127.0.0.1:9", bq_emulator.host_port, bq_dataset, ETL_BATCH_SIZE=2, ETL_PART_ROWS=3,
        ETL_MAX_RETRIES=1,
    )

    def run(body: dict[str, Any], **fields: Any) -> WorkerRun:
        bus = MemoryEventBus()
        request = {"schema_version": 1, "data_source_id": 4, "etl_run_id": next(_RUN_IDS), **body, **fields}
        delivery = Delivery(json.dumps(request).encode(), unique("msg"))
        outcome = build_handler(settings, bus).handle(delivery, threading.Event())
        return WorkerRun(outcome, bus.events)

    return run


def load_request(load_type: str) -> dict[str, Any]:
    """Request fields for a catalog run, or a transactional one with the integer `id` as cursor."""
    if load_type == "transactional":
        return {"load_type": "transactional", "timestamp_column": "id"}
    return {"load_type": "catalog"}
