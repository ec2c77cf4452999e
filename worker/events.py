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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from worker import constants as c
from worker import tracing
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
    TableCompleted,
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
            **tracing.trace_attributes(),
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

    @classmethod
    def total(cls, parts: Iterable[Counters]) -> Counters:
        """The counters of a job: its tables' summed."""
        parts = list(parts)
        return cls(*(sum(getattr(part, f.name) for part in parts) for f in dataclasses.fields(cls)))


@dataclass(frozen=True)
class SubWindowProgress:
    """Where a run read in sub-windows is (worker/sub_windows.py), for its progress events."""

    number: int  # 1-based, counted from the run's first delivery
    low: str | None
    high: str
    rows_committed: int  # in earlier sub-windows, by any delivery

    def fields(self) -> dict[str, Any]:
        return {"sub_window": self.number, "sub_window_low": self.low, "sub_window_high": self.high,
                "rows_committed": self.rows_committed}


@dataclass(frozen=True)
class ChunkProgress:
    """Where a catalog run read in key chunks is (worker/catalog_chunk_run.py), for its progress."""

    number: int  # 1-based, in key order, of the run's plan
    chunks: int  # in the plan

    def fields(self) -> dict[str, Any]:
        return {"chunk": self.number, "chunks": self.chunks}


_ENTRY_FIELDS = {f.name for f in dataclasses.fields(LedgerEntry)}
# run.completed fields taken from the ledger entry as they are (ids, counters, window, ...).
_SHARED_WITH_ENTRY = tuple(name for name in RunCompleted.model_fields if name in _ENTRY_FIELDS)
# ... and the fields of each table in its `tables` list.
_TABLE_FIELDS_OF_ENTRY = tuple(name for name in TableCompleted.model_fields if name in _ENTRY_FIELDS)


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
        # The same instant on both clocks: events count `elapsed_s` from `_started`, and the ledger
        # entry's duration (BigQuery's clock at commit minus `started_at`) from `started_at`, so
        # run.completed's duration never reads below a progress event's published before it.
        self._started, self.started_at = clock(), utcnow()
        self._last_progress = self._started
        self._seq = 0
        self._counters: tuple[Counters, ...] = (Counters(),)
        self._rows_expected: dict[str | None, int | None] = {}  # per table, from run.started

    @property
    def attempt(self) -> int:
        return int(self._ids["attempt"])

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def attempt_counters(self, tables: int = 1) -> tuple[Counters, ...]:
        """Fresh counters for a try of the run, one per table of its job; `failed` reports the
        latest try's, summed."""
        self._counters = tuple(Counters() for _ in range(tables))
        return self._counters

    def reserve_seq(self) -> int:
        self._seq += 1
        return self._seq

    def started(self, source_type: str, source_table: str, window: Window | None = None,
                rows_expected: int | None = None, column_names: dict[str, str] | None = None,
                table: str | None = None) -> None:
        """One table of the job planned: `table` is its destination (a job sends one per table)."""
        self._rows_expected[table] = rows_expected
        self._bus.publish(RunStarted(
            **self._common(Counters()), source_type=source_type, source_table=source_table,
            window_column=window.column if window else None,
            window_low=window.low_text if window else None,
            rows_expected=rows_expected, column_names=column_names or {}, table=table,
        ))

    def progress(
        self, counters: Counters, phase: Literal["extracting", "committing"] = "extracting",
        force: bool = False, table: str | None = None,
        sub_window: SubWindowProgress | ChunkProgress | None = None,
    ) -> None:
        """Publish if `progress_interval_s` has passed since the last one (or `force`). Best effort:
        a lost progress event must not fail a run that can still complete. `table`: the table
        being extracted (its counters); None: the whole job (the job's counters). `sub_window`: where
        a run read in sub-windows, or a catalog run read in key chunks, is."""
        now = self._clock()
        if not force and now - self._last_progress < self._progress_interval_s:
            return
        self._last_progress = now
        expected = self._expected(table)
        try:
            self._bus.publish(RunProgress(**self._common(counters), phase=phase, rows_expected=expected,
                                          fraction=_fraction(counters, phase, expected), table=table,
                                          **(sub_window.fields() if sub_window else {})))
        except PublishError as exc:
            log.warning("progress event not published: %s", exc)

    def completed(self, *entries: LedgerEntry) -> None:
        """The job committed: built from its ledger entries alone (one per table, in job order), so
        every delivery publishes the same event. Every field an entry and the event share is copied
        by name (worker/ledger.py's checklist): from the one entry of a one-table job; a job of
        several reports its tables in `tables` and their sums at the top level."""
        first = entries[0]
        top = {name: getattr(first, name) for name in _SHARED_WITH_ENTRY}
        # To the millisecond like every other event's: rounding is monotonic, so the duration
        # (BigQuery's clock at commit) cannot read below a progress event's published before it.
        top["duration_seconds"] = round(first.duration_seconds, 3)
        watermark, watermark_key = _watermark(first)
        if len(entries) > 1:
            top |= _job_totals(entries)
            watermark = watermark_key = None
        self._bus.publish(RunCompleted(
            **top, seq=first.completed_seq,
            event_id=event_id(first.run_id, first.attempt, first.completed_seq),
            occurred_at=first.committed_at, watermark=watermark, watermark_key=watermark_key,
            tables=[_table_completed(entry) for entry in entries],
        ))

    def failed(self, error: EtlError, counters: Counters | None = None, *,
               will_retry: bool | None = None) -> None:
        """`counters`: the failed attempt's (default: the sum of the last `attempt_counters()`);
        `will_retry`: whether another delivery comes (default: whether the error is transient)."""
        self._bus.publish(RunFailed(
            **self._common(counters or Counters.total(self._counters)), error=_info(error),
            will_retry=error.retryable if will_retry is None else will_retry,
        ))

    def dead_lettered(self, error: EtlError, dead_letter_topic: str) -> None:
        self._bus.publish(RunDeadLettered(**self._common(Counters.total(self._counters)), error=_info(error),
                                          dead_letter_topic=dead_letter_topic))

    def _expected(self, table: str | None) -> int | None:
        """A table's expected rows; the job's (every table's summed) for None."""
        if table is not None or None in self._rows_expected:
            return self._rows_expected.get(table)
        counts = list(self._rows_expected.values())
        return None if not counts or None in counts else sum(c for c in counts if c is not None)

    def _common(self, counters: Counters) -> dict[str, Any]:
        seq = self.reserve_seq()
        return {
            **self._ids, "seq": seq,
            "event_id": event_id(self._ids["run_id"], self._ids["attempt"], seq, self._id_salt),
            "occurred_at": utcnow(), "rows_extracted": counters.rows_extracted,
            "rows_loaded": counters.rows_loaded, "batches_loaded": counters.batches_loaded,
            "duration_seconds": round(self.elapsed_s, 3),
        }


def _fraction(counters: Counters, phase: str, expected: int | None) -> float | None:
    if phase == "committing":
        return 1.0
    if not expected:
        return None
    return min(1.0, round(counters.rows_extracted / expected, 4))


def _watermark(entry: LedgerEntry) -> tuple[str | None, str | None]:
    """Where the next window of the entry's table starts, and its sortable key (windowed modes)."""
    if not mode_of(entry.load_type).windowed:
        return None, None
    return entry.window_high, entry.window_high_key


def _table_completed(entry: LedgerEntry) -> TableCompleted:
    watermark, watermark_key = _watermark(entry)
    return TableCompleted(**{name: getattr(entry, name) for name in _TABLE_FIELDS_OF_ENTRY},
                          watermark=watermark, watermark_key=watermark_key)


def _job_totals(entries: Sequence[LedgerEntry]) -> dict[str, Any]:
    """run.completed's top level for a job of several tables: no one table's fields, the summed
    counters, and every table's warnings, each named after its table."""
    counts = [entry.source_row_count for entry in entries]
    return {
        "dest_table": None, "load_type": None, "window_column": None, "window_low": None,
        "window_high": None, "values_nulled": {}, "quality": None,
        **dataclasses.asdict(Counters.total(
            Counters(e.rows_extracted, e.rows_loaded, e.batches_loaded) for e in entries)),
        "source_row_count": None if None in counts else sum(c for c in counts if c is not None),
        "warnings": [f"{entry.dest_table}: {warning}" for entry in entries for warning in entry.warnings],
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
