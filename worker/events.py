"""Publishing run events: per-run sequence numbers, stable event ids, ordering key = run id.

`EventBus` is where events go (Pub/Sub in `serve`, stdout in `run`, a list in tests);
`RunEvents` builds one run's events and decides when progress is worth publishing.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from google.cloud import pubsub_v1

from worker import constants as c
from worker.errors import EtlError, PublishError
from worker.faults import instrument_publisher
from worker.ledger import LedgerEntry
from worker.logs import redact
from worker.messages import (
    ErrorInfo,
    Event,
    RunCompleted,
    RunFailed,
    RunProgress,
    RunStarted,
    encode_event,
    utcnow,
)
from worker.window import Window

log = logging.getLogger(__name__)
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1b8e-3c1e-4a55-9a57-0a6f3e2d9b10")
PUBLISH_TIMEOUT_S = 60.0


class EventBus(Protocol):
    def publish(self, event: Event) -> None:
        """Return once the event is durable (published and confirmed); raise PublishError if not."""
        ...


class PubSubEventBus:
    """Publishes to the events topic with message ordering on the run id."""

    def __init__(self, project: str, topic: str, publisher: pubsub_v1.PublisherClient | None = None):
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        self._publisher = publisher or pubsub_v1.PublisherClient(publisher_options=options)
        self._publisher = instrument_publisher(self._publisher)  # fault injection only; else as is
        self._topic_path = self._publisher.topic_path(project, topic)

    def publish(self, event: Event) -> None:
        attributes = {
            c.ATTR_EVENT_TYPE: event.event_type,
            c.ATTR_RUN_ID: event.run_id,
            c.ATTR_DATA_SOURCE_ID: "" if event.data_source_id is None else str(event.data_source_id),
        }
        future = self._publisher.publish(
            self._topic_path, encode_event(event), ordering_key=event.run_id, **attributes
        )
        try:
            future.result(timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            # An ordering key stays paused after a failure until resumed explicitly.
            self._publisher.resume_publish(self._topic_path, event.run_id)
            raise PublishError(f"could not publish {event.event_type}: {exc}") from exc


class PrintEventBus:
    """One JSON line per event (the one-shot `run` command)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.last_event_type: str | None = None

    def publish(self, event: Event) -> None:
        with self._lock:
            self.last_event_type = event.event_type
            self._stream.write(encode_event(event).decode() + "\n")
            self._stream.flush()


class MemoryEventBus:
    """Keeps events in a list (tests, and the demo's own view)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)


@dataclass
class Counters:
    rows_extracted: int = 0
    rows_loaded: int = 0
    batches_loaded: int = 0


def event_id(run_id: str, attempt: int, seq: int) -> str:
    """Deterministic: the same event published twice carries the same id (consumers deduplicate)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{run_id}/{attempt}/{seq}"))


class RunEvents:
    """The events of one delivery of one run, numbered 1, 2, 3, ... within the attempt."""

    def __init__(
        self,
        bus: EventBus,
        *,
        run_id: str,
        attempt: int,
        data_source_id: int | None,
        etl_run_id: int | None,
        dest_table: str | None,
        load_type: str | None,
        progress_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._ids: dict[str, Any] = {
            "run_id": run_id, "attempt": attempt, "data_source_id": data_source_id,
            "etl_run_id": etl_run_id, "dest_table": dest_table, "load_type": load_type,
        }
        self._progress_interval_s = progress_interval_s
        self._clock = clock
        self._started = clock()
        self._last_progress = self._started
        self._seq = 0

    @property
    def attempt(self) -> int:
        return int(self._ids["attempt"])

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def reserve_seq(self) -> int:
        self._seq += 1
        return self._seq

    def started(self, source_type: str, source_table: str, window: Window | None = None) -> None:
        self._bus.publish(RunStarted(
            **self._common(Counters()), source_type=source_type, source_table=source_table,
            window_column=window.column if window else None,
            window_low=window.low_text if window else None,
        ))

    def progress(
        self, counters: Counters, phase: Literal["extracting", "committing"] = "extracting",
        force: bool = False,
    ) -> None:
        """Publish if `progress_interval_s` has passed since the last one (or `force`). Best effort:
        a lost progress event must not fail a run that can still complete."""
        now = self._clock()
        if not force and now - self._last_progress < self._progress_interval_s:
            return
        self._last_progress = now
        try:
            self._bus.publish(RunProgress(**self._common(counters), phase=phase))
        except PublishError as exc:
            log.warning("progress event not published: %s", exc)

    def completed(self, entry: LedgerEntry) -> None:
        """Built from the ledger entry alone, so every delivery publishes the same event."""
        ids = {**self._ids, "attempt": entry.attempt}
        self._bus.publish(RunCompleted(
            **ids, seq=entry.completed_seq,
            event_id=event_id(entry.run_id, entry.attempt, entry.completed_seq),
            occurred_at=entry.committed_at, rows_extracted=entry.rows_extracted,
            rows_loaded=entry.rows_loaded, batches_loaded=entry.batches_loaded,
            duration_seconds=entry.duration_seconds, window_column=entry.window_column,
            window_low=entry.window_low, window_high=entry.window_high,
            watermark=entry.window_high if entry.load_type == c.TRANSACTIONAL else None,
            source_row_count=entry.source_row_count, committed_at=entry.committed_at,
            values_nulled=dict(entry.values_nulled), warnings=list(entry.warnings),
        ))

    def failed(self, error: EtlError, counters: Counters) -> None:
        info = ErrorInfo(type=error.type_name, message=redact(str(error))[:4000],
                         retryable=error.retryable)
        self._bus.publish(RunFailed(**self._common(counters), error=info))

    def _common(self, counters: Counters) -> dict[str, Any]:
        seq = self.reserve_seq()
        return {
            **self._ids, "seq": seq, "event_id": event_id(self._ids["run_id"], self._ids["attempt"], seq),
            "occurred_at": utcnow(), "rows_extracted": counters.rows_extracted,
            "rows_loaded": counters.rows_loaded, "batches_loaded": counters.batches_loaded,
            "duration_seconds": round(self.elapsed_s, 3),
        }


def event_from_json(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data)
    return loaded
