"""Run history: every delivery's outcome, failures included, in BigQuery (`_etl_runs`).

The worker records each event it publishes but progress (started, completed, failed with its typed
error and `will_retry`, dead-lettered, replayed) as one row of `_etl_runs` in the destination
dataset, with streaming inserts: they cost no load job, so neither that table nor any destination
spends its daily table-modification quota, and they need no DML concurrency slot.

Recording never changes a run's outcome: it happens after the event is published, on a background
thread; a row that cannot be written is logged as a gap (`history gap: ...`) and the run goes on.
Streaming inserts are at-least-once (the insert id makes duplicates rare on real BigQuery; the
emulator keeps none): readers deduplicate on `event_id`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import bigquery

from worker import constants as c
from worker.events import EventBus
from worker.logs import redact
from worker.messages import Event, RunFailed
from worker.settings import Settings
from worker.sinks import bigquery_client

log = logging.getLogger(__name__)

HISTORY_TABLE = "_etl_runs"
QUEUE_EVENTS = 1000  # events waiting to be recorded; past it, new ones are logged as gaps
FLUSH_TIMEOUT_S = 10.0
RECORDED = frozenset({c.RUN_STARTED, c.RUN_COMPLETED, c.RUN_FAILED, c.RUN_DEAD_LETTERED, c.RUN_REPLAYED})
FIELDS: tuple[tuple[str, str], ...] = (
    ("event_id", "STRING"), ("event_type", "STRING"), ("run_id", "STRING"), ("attempt", "INT64"),
    ("seq", "INT64"), ("occurred_at", "TIMESTAMP"), ("data_source_id", "INT64"), ("etl_run_id", "INT64"),
    ("dest_table", "STRING"), ("load_type", "STRING"), ("rows_extracted", "INT64"), ("rows_loaded", "INT64"),
    ("duration_seconds", "FLOAT64"), ("error_type", "STRING"), ("error_message", "STRING"),
    ("will_retry", "BOOL"), ("event", "STRING"),
)


def history_schema() -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, kind) for name, kind in FIELDS]


def history_row(event: Event) -> dict[str, Any]:
    """One `_etl_runs` row: the fields people filter on, plus the whole event as JSON."""
    error = getattr(event, "error", None)
    return {
        "event_id": event.event_id, "event_type": event.event_type, "run_id": event.run_id,
        "attempt": event.attempt, "seq": event.seq, "occurred_at": event.occurred_at.isoformat(),
        "data_source_id": event.data_source_id, "etl_run_id": event.etl_run_id,
        "dest_table": event.dest_table, "load_type": event.load_type,
        "rows_extracted": event.rows_extracted, "rows_loaded": event.rows_loaded,
        "duration_seconds": event.duration_seconds,
        "error_type": error.type if error else None, "error_message": error.message if error else None,
        "will_retry": event.will_retry if isinstance(event, RunFailed) else None,
        "event": event.model_dump_json(),
    }


class HistoryTable:
    """Writes rows to `_etl_runs` (creating it once) and reads them back."""

    def __init__(self, client: bigquery.Client, project: str, dataset: str,
                 retry: bigquery.retry.Retry | None = None) -> None:
        self._client = client
        self._dataset = f"{project}.{dataset}"
        self.table_id = f"{project}.{dataset}.{HISTORY_TABLE}"
        self._retry = retry or bigquery.DEFAULT_RETRY
        self._ready = False

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._ensure()
        ids = [row["event_id"] for row in rows]
        errors = self._client.insert_rows_json(self.table_id, list(rows), row_ids=ids, retry=self._retry)
        if errors:
            raise RuntimeError(f"BigQuery refused history rows: {errors[:3]}")

    def query(self, sql: str, params: Sequence[bigquery.ScalarQueryParameter] = ()) -> list[dict[str, Any]]:
        """Rows of a query on the history (`{runs}` stands for the table); none if there is none yet."""
        from google.api_core import exceptions as gexc

        config = bigquery.QueryJobConfig(query_parameters=list(params))
        try:
            job = self._client.query(sql.format(runs=f"`{self.table_id}`"), job_config=config,
                                     retry=self._retry, job_retry=None)
            return [dict(row) for row in job.result(retry=self._retry)]
        except gexc.NotFound:
            return []

    def _ensure(self) -> None:
        if self._ready:
            return
        self._client.create_dataset(self._dataset, exists_ok=True, retry=self._retry)
        table = bigquery.Table(self.table_id, schema=history_schema())
        table.description = "One row per run event but progress (etl-worker); deduplicate on event_id."
        table.time_partitioning = bigquery.TimePartitioning(field="occurred_at")
        self._client.create_table(table, exists_ok=True, retry=self._retry)
        self._ready = True


class RecordingBus:
    """An EventBus that publishes through `inner`, then records the event in the history, on a
    thread of its own: the run never waits for the history, and never fails because of it."""

    def __init__(self, inner: EventBus, table: HistoryTable) -> None:
        self._inner = inner
        self._table = table
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=QUEUE_EVENTS)
        self._thread = threading.Thread(target=self._record_forever, name="history", daemon=True)
        self._thread.start()

    def publish(self, event: Event) -> None:
        self._inner.publish(event)  # durable first: the history is a record of what was published
        if event.event_type not in RECORDED:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            _gap(event, "the history queue is full")

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until what was queued is recorded (or logged as a gap), e.g. before exiting; False
        when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def _record_forever(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._table.insert([history_row(event)])
            except Exception as exc:  # a gap, never the run's failure
                _gap(event, redact(str(exc)))
            finally:
                self._queue.task_done()


def _gap(event: Event, why: str) -> None:
    log.error("history gap: %s %s of run %s (attempt %d) not recorded: %s", event.event_type,
              event.event_id, event.run_id, event.attempt, why)


def recording(settings: Settings, bus: EventBus) -> EventBus:
    """`bus`, with every event but progress also recorded in the run history (unless ETL_HISTORY
    is off): worker/history.py."""
    if not settings.etl_history:
        return bus
    client = bigquery_client.make_bigquery_client(settings.gcp_project_id, settings.bigquery_emulator_host)
    table = HistoryTable(client, settings.gcp_project_id, settings.bigquery_dataset,
                         bigquery_client.api_retry(settings.bigquery_emulator_host))
    return RecordingBus(bus, table)


def flush_history(bus: EventBus) -> None:
    """Before a process exits: what the history still has to record (bounded wait)."""
    if isinstance(bus, RecordingBus) and not bus.flush():
        log.warning("history: some events were still being recorded at exit")


# --- reading -------------------------------------------------------------------------------------
OUTCOMES = c.RUN_OUTCOMES


@dataclass(frozen=True)
class RunRecord:
    """A run as its newest recorded event leaves it."""

    run_id: str
    data_source_id: int | None
    dest_table: str | None
    load_type: str | None
    outcome: str
    attempt: int
    last_at: datetime
    rows_loaded: int
    duration_seconds: float
    error: str | None
    window: str | None


def outcome_of(event_type: str, will_retry: bool | None) -> str:
    """The state a run's newest event leaves it in (docs/events.md, "The states of a run")."""
    return {
        c.RUN_COMPLETED: "committed", c.RUN_DEAD_LETTERED: "dead-lettered", c.RUN_REPLAYED: "replayed",
        c.RUN_STARTED: "running",
    }.get(event_type) or ("retrying" if will_retry else "failed")


def latest_sql(filters: Sequence[str]) -> str:
    """Each run's newest event (a completion wins over anything an older attempt sent later)."""
    where = " AND ".join(["TRUE", *filters])
    return (
        "SELECT * FROM {runs} WHERE " + where + " QUALIFY ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY "
        f"event_type = '{c.RUN_COMPLETED}' DESC, attempt DESC, seq DESC, event_id) = 1 "
        "ORDER BY occurred_at DESC, run_id LIMIT @limit"
    )


def record_from_row(row: Mapping[str, Any]) -> RunRecord:
    event = json.loads(row["event"]) if row.get("event") else {}
    window = None
    if row["event_type"] == c.RUN_COMPLETED and event.get("window_high"):
        window = f"{event.get('window_column')}: [{event.get('window_low') or '-∞'}, {event['window_high']})"
    error = f"{row['error_type']}: {row['error_message']}" if row.get("error_type") else None
    return RunRecord(
        run_id=row["run_id"], data_source_id=row.get("data_source_id"), dest_table=row.get("dest_table"),
        load_type=row.get("load_type"), outcome=outcome_of(row["event_type"], row.get("will_retry")),
        attempt=int(row["attempt"]), last_at=row["occurred_at"], rows_loaded=int(row.get("rows_loaded") or 0),
        duration_seconds=float(row.get("duration_seconds") or 0.0), error=error, window=window,
    )
