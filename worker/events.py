"""Publishing run events: per-run sequence numbers, stable event ids, ordering key = run id.

`EventBus` is where events go (Pub/Sub in `serve`, stdout in `run`, a list in tests);
`RunEvents` builds one run's events and decides when progress is worth publishing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from worker import constants as c
from worker.errors import EtlError, PublishError
from worker.faults import instrument_publisher
from worker.ledger import LedgerEntry
from worker.logs import redact
from worker.messages import (
    ErrorInfo,
    Event,
    RunCompleted,
    RunDeadLettered,
    RunFailed,
    RunProgress,
    RunReplayed,
    RunStarted,
    encode_event,
    utcnow,
)
from worker.modes import MODE_NAMES, mode_of
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

    def __init__(self, project: str, topic: str, publisher: Any = None):
        # Imported here: the one-shot `run` prints its events and never pays for the Pub/Sub client.
        from google.cloud import pubsub_v1

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


# run.completed fields taken from the ledger entry as they are (ids, counters, window, ...).
_SHARED_WITH_ENTRY = tuple(
    name for name in RunCompleted.model_fields if name in {f.name for f in dataclasses.fields(LedgerEntry)}
)


def event_id(run_id: str, attempt: int, seq: int, salt: str = "") -> str:
    """Deterministic: the same event published twice carries the same id (consumers deduplicate).
    `salt` sets apart events of another request that carries the same run id (a reused etl_run_id),
    which must not be dropped as duplicates of the committed run's events."""
    name = f"{run_id}/{salt}/{attempt}/{seq}" if salt else f"{run_id}/{attempt}/{seq}"
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


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
        id_salt: str = "",
        context: dict[str, Any] | None = None,
    ) -> None:
        self._bus = bus
        self._id_salt = id_salt
        self._ids: dict[str, Any] = {
            "run_id": run_id, "attempt": attempt, "data_source_id": data_source_id,
            "etl_run_id": etl_run_id, "dest_table": dest_table, "load_type": load_type,
            "context": context,
        }
        self._progress_interval_s = progress_interval_s
        self._clock = clock
        self._started = clock()
        self._last_progress = self._started
        self._seq = 0
        self._counters = Counters()
        self._rows_expected: int | None = None

    @property
    def attempt(self) -> int:
        return int(self._ids["attempt"])

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def attempt_counters(self) -> Counters:
        """Fresh counters for a try of the run; `failed` reports the latest try's."""
        self._counters = Counters()
        return self._counters

    def reserve_seq(self) -> int:
        self._seq += 1
        return self._seq

    def started(self, source_type: str, source_table: str, window: Window | None = None,
                rows_expected: int | None = None, column_names: dict[str, str] | None = None) -> None:
        self._rows_expected = rows_expected
        self._bus.publish(RunStarted(
            **self._common(Counters()), source_type=source_type, source_table=source_table,
            window_column=window.column if window else None,
            window_low=window.low_text if window else None,
            rows_expected=rows_expected, column_names=column_names or {},
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
            self._bus.publish(RunProgress(**self._common(counters), phase=phase,
                                          rows_expected=self._rows_expected,
                                          fraction=self._fraction(counters, phase)))
        except PublishError as exc:
            log.warning("progress event not published: %s", exc)

    def completed(self, entry: LedgerEntry) -> None:
        """Built from the ledger entry alone, so every delivery publishes the same event: every
        field the entry and the event share is copied by name (worker/ledger.py's checklist)."""
        shared = {name: getattr(entry, name) for name in _SHARED_WITH_ENTRY}
        self._bus.publish(RunCompleted(
            **shared, seq=entry.completed_seq,
            event_id=event_id(entry.run_id, entry.attempt, entry.completed_seq),
            occurred_at=entry.committed_at,
            watermark=entry.window_high if mode_of(entry.load_type).windowed else None,
            watermark_key=entry.window_high_key if mode_of(entry.load_type).windowed else None,
        ))

    def failed(self, error: EtlError, counters: Counters | None = None, *,
               will_retry: bool | None = None) -> None:
        """`counters`: the failed attempt's (default: those of the last `attempt_counters()`);
        `will_retry`: whether another delivery comes (default: whether the error is transient)."""
        self._bus.publish(RunFailed(
            **self._common(counters or self._counters), error=_info(error),
            will_retry=error.retryable if will_retry is None else will_retry,
        ))

    def dead_lettered(self, error: EtlError, dead_letter_topic: str) -> None:
        self._bus.publish(RunDeadLettered(**self._common(self._counters), error=_info(error),
                                          dead_letter_topic=dead_letter_topic))

    def _fraction(self, counters: Counters, phase: str) -> float | None:
        if phase == "committing":
            return 1.0
        if not self._rows_expected:
            return None
        return min(1.0, round(counters.rows_extracted / self._rows_expected, 4))

    def _common(self, counters: Counters) -> dict[str, Any]:
        seq = self.reserve_seq()
        return {
            **self._ids, "seq": seq,
            "event_id": event_id(self._ids["run_id"], self._ids["attempt"], seq, self._id_salt),
            "occurred_at": utcnow(), "rows_extracted": counters.rows_extracted,
            "rows_loaded": counters.rows_loaded, "batches_loaded": counters.batches_loaded,
            "duration_seconds": round(self.elapsed_s, 3),
        }


def _info(error: EtlError) -> ErrorInfo:
    return ErrorInfo(type=error.type_name, message=redact(str(error))[:4000], retryable=error.retryable)


def replayed_event(*, run_id: str, data_source_id: int | None, etl_run_id: int | None,
                   dest_table: str | None, load_type: str | None, attempts_so_far: int, replay_of: str,
                   replay_count: int, context: dict[str, Any] | None) -> RunReplayed:
    """`etl-worker replay`'s event for one republished request (its id: one per dead letter)."""
    return RunReplayed(
        event_id=event_id(run_id, attempts_so_far, 1, salt=f"replay/{replay_of}"), run_id=run_id,
        data_source_id=data_source_id, etl_run_id=etl_run_id, seq=1, attempt=max(1, attempts_so_far),
        occurred_at=utcnow(), dest_table=dest_table,
        load_type=load_type if load_type in MODE_NAMES else None,  # type: ignore[arg-type]
        rows_extracted=0, rows_loaded=0, batches_loaded=0, duration_seconds=0.0,
        context=context, replay_of=replay_of, replay_count=replay_count,
    )


def event_from_json(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data)
    return loaded
