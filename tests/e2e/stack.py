"""Helpers for end-to-end tests: a worker on unique Pub/Sub names, publishing, collecting events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from google.cloud import bigquery, pubsub_v1

from tests.conftest import PROJECT, unique
from worker.app import build_worker
from worker.commands.topology import setup
from worker.settings import Settings

EVENT_WAIT_S = 120.0
RECHECK_S = 0.5
_OPEN_STACKS: list[Stack] = []


def close_open_stacks() -> None:
    """Stop the event streams of every Stack made by a test (called after each test)."""
    while _OPEN_STACKS:
        _OPEN_STACKS.pop().close()


def make_settings(pubsub_host: str, bq_host: str, dataset: str, **overrides: Any) -> Settings:
    """Settings for one test: unique topic/subscription names, short deadlines, fast retries."""
    return settings_from_env(settings_env(pubsub_host, bq_host, dataset, **overrides))


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Settings from variables named as in the environment (GCP_PROJECT_ID=...), validated as the
    worker's own environment is: strings converted to each field's type."""
    # The keywords are the fields' validation aliases, the values strings that pydantic converts;
    # mypy only knows the fields' names and types.
    return Settings(**env)  # type: ignore[arg-type]


def settings_env(pubsub_host: str, bq_host: str, dataset: str, **overrides: Any) -> dict[str, str]:
    """The same settings as environment variables (for worker subprocesses)."""
    names = unique("t")
    values: dict[str, Any] = {
        "GCP_PROJECT_ID": PROJECT,
        "BIGQUERY_DATASET": dataset,
        "PUBSUB_EMULATOR_HOST": pubsub_host,
        "BIGQUERY_EMULATOR_HOST": bq_host,
        "ETL_REQUEST_TOPIC": f"{names}-requests",
        "ETL_REQUEST_SUBSCRIPTION": f"{names}-worker",
        "ETL_EVENTS_TOPIC": f"{names}-events",
        "ETL_DEAD_LETTER_TOPIC": f"{names}-dead-letter",
        "ETL_ACK_DEADLINE_SECONDS": 10,
        "ETL_MAX_LEASE_EXTENSION_SECONDS": 10,
        "ETL_RETRY_MIN_BACKOFF_SECONDS": 1,
        "ETL_RETRY_MAX_BACKOFF_SECONDS": 2,
        "ETL_RETRY_DELAY": 0.05,
        "ETL_PROGRESS_INTERVAL_SECONDS": 0,
        "ETL_INCREMENTAL_LAG": 0,
        "ETL_SHUTDOWN_GRACE_SECONDS": 5,
    }
    values.update(overrides)
    return {key: str(value) for key, value in values.items()}


class Stack:
    """Topics and subscriptions made by `setup`, plus a test subscription on the events topic."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.env = env or {}
        setup(settings)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        project = settings.gcp_project_id
        self.request_topic = self.publisher.topic_path(project, settings.etl_request_topic)
        self.request_subscription = self.subscriber.subscription_path(
            project, settings.etl_request_subscription)
        self.events_subscription = self.subscriber.subscription_path(
            project, settings.etl_events_topic + "-test")
        self.subscriber.create_subscription(request={
            "name": self.events_subscription,
            "topic": self.publisher.topic_path(project, settings.etl_events_topic),
            "enable_message_ordering": True,
        })
        self.events: list[dict[str, Any]] = []
        self._arrived: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._arrival = threading.Condition(self._lock)  # wakes wait_for as each event arrives
        # Streaming pull: the emulator's unary pull can hold messages back until the run ends.
        self._stream = self.subscriber.subscribe(self.events_subscription, self._on_event)
        _OPEN_STACKS.append(self)

    def _on_event(self, message: Any) -> None:
        event = json.loads(message.data)
        event["_attributes"] = dict(message.attributes)
        with self._arrival:
            self._arrived.append(event)
            self._arrival.notify_all()
        message.ack()

    def close(self) -> None:
        self._stream.cancel()
        with contextlib.suppress(Exception):
            self._stream.result(timeout=10)

    def publish(self, body: dict[str, Any] | bytes, **attributes: str) -> str:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return str(self.publisher.publish(self.request_topic, data, **attributes).result(timeout=30))

    def pull_events(self) -> list[dict[str, Any]]:
        """Everything received so far on the events topic, in arrival order."""
        with self._lock:
            self.events.extend(self._arrived)
            self._arrived.clear()
        return self.events

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = EVENT_WAIT_S) -> list[dict[str, Any]]:
        """Until `predicate(events)` holds: checked again as soon as an event arrives (and at least
        every RECHECK_S, for predicates that also look at other state)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate(self.pull_events()):
                return self.events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"events not seen within {timeout_s}s: {self.events}")
            with self._arrival:
                if not self._arrived:
                    self._arrival.wait(min(remaining, RECHECK_S))

    def terminal_events(self, run_id: str) -> list[dict[str, Any]]:
        return [e for e in self.pull_events() if e["run_id"] == run_id
                and e["event_type"] in ("run.completed", "run.failed")]

    def wait_terminal(self, run_id: str, count: int = 1,
                      timeout_s: float = EVENT_WAIT_S) -> list[dict[str, Any]]:
        self.wait_for(lambda _: len(self.terminal_events(run_id)) >= count, timeout_s)
        return self.terminal_events(run_id)

    def undelivered_requests(self) -> int:
        """Requests still on the worker subscription (a separate unary pull; nacks them back)."""
        response = self.subscriber.pull(
            subscription=self.request_subscription, max_messages=10, timeout=5)
        ack_ids = [r.ack_id for r in response.received_messages]
        if ack_ids:
            self.subscriber.modify_ack_deadline(
                subscription=self.request_subscription, ack_ids=ack_ids, ack_deadline_seconds=0)
        return len(ack_ids)


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[threading.Thread]:
    """The real `serve` loop in a thread, stopped (drained) at the end of the block."""
    worker = build_worker(settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.serve()
        except BaseException as exc:  # surfaced after the block
            errors.append(exc)

    thread = threading.Thread(target=target, name="etl-worker-serve", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop_requested.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "worker did not stop"
    assert not errors, errors


def bq_rows(client: bigquery.Client, dataset: str, table: str, order_by: str) -> list[tuple[Any, ...]]:
    query = f"SELECT * FROM `{PROJECT}.{dataset}.{table}` ORDER BY `{order_by}`"
    return [tuple(row.values()) for row in client.query(query).result()]


def bq_count(client: bigquery.Client, dataset: str, table: str) -> int:
    rows = list(client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}.{table}`").result())
    return int(rows[0]["n"])
