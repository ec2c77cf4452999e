"""Run one request through the real handler, runner, source and BigQuery emulator, without Pub/Sub
(where the transport is not the point): `run_once(body, run_id)` returns the run's events."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from devstack.emulators import Emulator
from tests.e2e.stack import make_settings
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.messages import Event
from worker.settings import Settings

RunOnce = Callable[..., list[Event]]
# Tiny, so that the few rows of a test cross batch and part boundaries.
BATCH_ROWS = 7
PART_ROWS = 11


def one_shot_runner(settings: Settings) -> RunOnce:
    """`run_once` on these settings."""

    def one(body: dict[str, Any], run_id: str, expect: Outcome = Outcome.ACK) -> list[Event]:
        bus = MemoryEventBus()
        handler = build_handler(settings, bus, Redelivery(redelivers=False))
        delivery = Delivery(data=json.dumps(body).encode(), message_id=run_id, attributes={"run_id": run_id})
        outcome = handler.handle(delivery, threading.Event())
        assert outcome is expect, bus.events[-1] if bus.events else "no events"
        return bus.events

    return one


@pytest.fixture
def run_once(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> RunOnce:
    return one_shot_runner(make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                                         ETL_BATCH_SIZE=BATCH_ROWS, ETL_PART_ROWS=PART_ROWS))
