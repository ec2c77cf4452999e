"""The events consumer: a streaming pull feeding ONE thread that applies and acks.

The subscriber library calls back on its own threads; those only queue the message. Applying happens
on the thread that calls `process` (one database connection, one transaction per event), and the ack
is sent after the commit. With message ordering the library releases a run's next event only once the
previous one is acked, so one run's events are applied in publish order.

Keep one EventConsumer open for as long as you consume: the Pub/Sub emulator mishandles a streaming
pull that is cancelled and opened again on the same subscription (messages can be routed to the dead
stream for a minute).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections
from google.cloud import pubsub_v1

from etl.apply import Outcome, handle_event
from etl.pubsub import ensure_events_subscription

log = logging.getLogger(__name__)
POLL_S = 0.2  # how often `until` and the limits are looked at while no message arrives
MAX_HELD_MESSAGES = 100


@dataclass
class Totals:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    adopted: int = 0
    rejected: int = 0
    errors: int = 0


class EventConsumer:
    def __init__(self, subscription: str | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        self.path = ensure_events_subscription(self._subscriber, subscription)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._on_outcome = on_outcome
        self._future: Any = None
        self.totals = Totals()

    def start(self) -> EventConsumer:
        flow = pubsub_v1.types.FlowControl(max_messages=MAX_HELD_MESSAGES)
        self._future = self._subscriber.subscribe(self.path, callback=self._queue.put, flow_control=flow)
        return self

    def close(self) -> None:
        """Stop pulling; messages received but not applied are nacked (they come back)."""
        if self._future is not None:
            self._future.cancel()
            # Cancelled, or the stream had already failed: nothing more to do either way.
            with contextlib.suppress(Exception):
                self._future.result(timeout=10)
            self._future = None
        while not self._queue.empty():
            self._queue.get_nowait().nack()
        self._subscriber.close()

    def __enter__(self) -> EventConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, *, until: Callable[[], bool] | None = None, max_messages: int | None = None,
                max_seconds: float | None = None, idle_seconds: float | None = None) -> Totals:
        """Apply events until `until()` is true, `max_messages` were handled, `max_seconds` passed or
        nothing arrived for `idle_seconds`; with none of these, forever. Returns the running totals."""
        started = last_message = time.monotonic()
        handled = 0
        while not (until and until()) and (max_messages is None or handled < max_messages):
            now = time.monotonic()
            if max_seconds is not None and now - started >= max_seconds:
                break
            if idle_seconds is not None and now - last_message >= idle_seconds:
                break
            self._raise_if_stream_failed()
            try:
                message = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            self.handle(message)
            handled += 1
            last_message = time.monotonic()
        return self.totals

    def handle(self, message: Any) -> None:
        """Apply one message and ack it after the commit; nack it if the database failed."""
        close_old_connections()  # a long-running consumer: drop a connection that broke or aged out
        self.totals.messages += 1
        try:
            outcome = handle_event(_decode(message.data))
        except Exception:
            self.totals.errors += 1
            log.exception("event %s not applied; it will be redelivered", message.message_id)
            message.nack()
            return
        message.ack()
        self._count(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _count(self, outcome: Outcome) -> None:
        totals = self.totals
        totals.applied += outcome.applied
        totals.duplicates += outcome.duplicate
        totals.adopted += outcome.adopted
        if outcome.note.startswith("rejected"):
            totals.rejected += 1
            log.error("event dropped: %s", outcome.note)

    def _raise_if_stream_failed(self) -> None:
        if self._future is not None and self._future.done():
            self._future.result()  # raises what stopped the stream (e.g. subscription deleted)
            raise RuntimeError("the events stream ended")


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None  # handle_event rejects it: acked, logged
