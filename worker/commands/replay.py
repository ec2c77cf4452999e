"""`etl-worker replay`: show dead-lettered requests and send the chosen ones back to the workers.

A request lands in the dead-letter topic after ETL_MAX_DELIVERY_ATTEMPTS failed deliveries; the hold
subscription made by `setup` keeps it. `replay` pulls what the hold subscription has (at most
MAX_PULL messages), shows each one, republishes the selected ones to the request topic and acks a
dead-letter copy only once its republish is confirmed. Everything else is released (nacked) and stays.

A replayed request carries its original data and attributes, minus Pub/Sub's
`CloudPubSubDeadLetter*` attributes, plus:
- `run_id`: the run's id, so a run that did commit is not applied again (it reports run.completed);
- `replay_of`: the dead-letter message id; `replay_count`: one more than the copy had;
- `prior_attempts`: the deliveries so far, so attempt numbers (and so event ids) go on counting.

Known limit: Pub/Sub gives the dead-letter copy a new message id and does not carry the original
one. A request with `etl_run_id` (Django) or a `run_id` attribute keeps its run id exactly. One
with neither (a static Cloud Scheduler body) ran as `msg-<original id>` and is replayed as
`msg-<dead-letter id>`: a new run id. The data is still safe (a transactional window starts at the
ledger's last committed high; a catalog run replaces the table), but Django sees a new run.

"Last error": Pub/Sub keeps no error with a dead letter, so replay cannot show it; the run's
`run.failed` events (`etl-worker watch`, Django) have it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from worker import constants as c
from worker.commands.topology import dead_letter_subscription
from worker.errors import MessageDecodeError
from worker.events import EventBus, PubSubEventBus, replayed_event
from worker.handlers.base import Delivery, prior_attempts
from worker.handlers.etl_run_requested import run_id_for
from worker.logs import REDACTOR, redact
from worker.messages import EtlRunRequest, decode_request, utcnow
from worker.settings import Settings

log = logging.getLogger(__name__)
MAX_PULL = 1000  # messages looked at in one invocation
PULL_BATCH = 100
PULL_TIMEOUT_S = 3.0  # an empty pull waits about this long before it answers
PUBLISH_TIMEOUT_S = 60.0
RELEASE_BATCH = 500
DELIVERY_COUNT_ATTR = c.DEAD_LETTER_ATTR_PREFIX + "SourceDeliveryCount"
FIRST_PUBLISHED_ATTR = c.DEAD_LETTER_ATTR_PREFIX + "SourceTopicPublishTime"
HEADERS = ("dead letter", "run id", "source", "table", "attempts", "age", "last error", "action")
UNKNOWN_ERROR = "unknown"


@dataclass(frozen=True)
class DeadLetter:
    """One pulled dead-letter copy."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: datetime | None = None


@dataclass(frozen=True)
class Described:
    """What replay shows and decides on, read from a dead letter."""

    letter: DeadLetter
    run_id: str
    data_source_id: int | None
    table: str
    attempts: int | None
    first_published: datetime | None


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: those matching every given filter, at most `limit`."""

    run_ids: frozenset[str] = frozenset()
    data_source_ids: frozenset[int] = frozenset()
    everything: bool = False
    limit: int | None = None

    @property
    def given(self) -> bool:
        return self.everything or bool(self.run_ids) or bool(self.data_source_ids)

    def matches(self, item: Described) -> bool:
        if not self.given:
            return False
        if self.run_ids and item.run_id not in self.run_ids:
            return False
        return not self.data_source_ids or item.data_source_id in self.data_source_ids

    def choose(self, items: Sequence[Described]) -> list[bool]:
        chosen: list[bool] = []
        for item in items:
            room = self.limit is None or sum(chosen) < self.limit
            chosen.append(room and self.matches(item))
        return chosen


# --- reading a dead letter ------------------------------------------------------------------------
def describe(letter: DeadLetter) -> Described:
    """Run id (as the worker derives it), data source, table, attempts and first publish time."""
    body = _json_object(letter.data)
    _register_password(body)
    request = _decode(letter.data)
    return Described(
        letter=letter,
        run_id=_run_id(body, letter),
        data_source_id=request.data_source_id if request else _int_field(body, "data_source_id"),
        table=_table(request, body),
        attempts=_count(letter.attributes.get(DELIVERY_COUNT_ATTR)),
        first_published=_timestamp(letter.attributes.get(FIRST_PUBLISHED_ATTR)) or letter.publish_time,
    )


def _decode(data: bytes) -> EtlRunRequest | None:
    try:
        return decode_request(data)
    except MessageDecodeError:
        return None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        return {}
    return body if isinstance(body, dict) else {}


def _register_password(body: Mapping[str, Any]) -> None:
    """Mask the request's plaintext password in everything printed, even when the body is invalid."""
    params = body.get("connection_params")
    if isinstance(params, dict) and isinstance(params.get("password"), str):
        REDACTOR.register(params["password"])


def _run_id(body: Mapping[str, Any], letter: DeadLetter) -> str:
    """The run id the worker gives this request, valid or not (the handler's rule; see the module's
    known limit)."""
    return run_id_for(_int_field(body, "etl_run_id"), Delivery(
        data=letter.data, message_id=letter.message_id, attributes=letter.attributes))


def _int_field(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _table(request: EtlRunRequest | None, body: Mapping[str, Any]) -> str:
    if request is None:
        dest = body.get("dest_table_name")
        return f"(invalid request) → {dest[:64]}" if isinstance(dest, str) else "(invalid request)"
    return f"{request.source_type}:{request.describe_tables()}"


def _count(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 6 else None


def _timestamp(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


# --- what is republished --------------------------------------------------------------------------
def replay_attributes(item: Described) -> dict[str, str]:
    """The original attributes minus Pub/Sub's dead-letter ones, plus the replay's own."""
    attributes = {key: value for key, value in item.letter.attributes.items()
                  if not key.startswith(c.DEAD_LETTER_ATTR_PREFIX)}
    attributes[c.ATTR_RUN_ID] = item.run_id
    attributes[c.ATTR_REPLAY_OF] = item.letter.message_id
    attributes[c.ATTR_REPLAY_COUNT] = str((_count(attributes.get(c.ATTR_REPLAY_COUNT)) or 0) + 1)
    attributes[c.ATTR_PRIOR_ATTEMPTS] = str(prior_attempts(attributes) + (item.attempts or 0))
    return attributes


# --- transport ------------------------------------------------------------------------------------
class DeadLetters(Protocol):
    def pull(self) -> list[DeadLetter]: ...

    def ack(self, letter: DeadLetter) -> None: ...

    def release(self, letters: Sequence[DeadLetter]) -> None: ...


class RequestPublisher(Protocol):
    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """The new message id, once the publish is confirmed."""
        ...


class DeadLetterQueue:
    """The hold subscription, by unary pull (never a streaming pull: see the emulator notes)."""

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str) -> None:
        self._subscriber = subscriber
        self._subscription = subscription

    def pull(self) -> list[DeadLetter]:
        """Everything available, up to MAX_PULL; the copies stay leased until acked or released."""
        by_id: dict[str, DeadLetter] = {}
        while len(by_id) < MAX_PULL:
            batch = self._pull_once(min(PULL_BATCH, MAX_PULL - len(by_id)))
            if not batch:
                break
            by_id.update((letter.message_id, letter) for letter in batch)  # a redelivery: newest ack id
        return list(by_id.values())

    def ack(self, letter: DeadLetter) -> None:
        self._subscriber.acknowledge(subscription=self._subscription, ack_ids=[letter.ack_id])

    def release(self, letters: Sequence[DeadLetter]) -> None:
        """Make them available again at once (modify_ack_deadline 0)."""
        ack_ids = [letter.ack_id for letter in letters]
        for start in range(0, len(ack_ids), RELEASE_BATCH):
            self._subscriber.modify_ack_deadline(subscription=self._subscription,
                                                 ack_ids=ack_ids[start:start + RELEASE_BATCH],
                                                 ack_deadline_seconds=0)

    def _pull_once(self, max_messages: int) -> list[DeadLetter]:
        try:
            response = self._subscriber.pull(subscription=self._subscription,
                                             max_messages=max_messages, timeout=PULL_TIMEOUT_S)
        except gexc.DeadlineExceeded:
            return []
        return [DeadLetter(ack_id=r.ack_id, message_id=r.message.message_id, data=bytes(r.message.data),
                           attributes=dict(r.message.attributes), publish_time=r.message.publish_time)
                for r in response.received_messages]


class Republisher:
    """Publishes to the request topic and waits for the confirmation."""

    def __init__(self, publisher: pubsub_v1.PublisherClient, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        future = self._publisher.publish(self._topic, data, **attributes)
        return str(future.result(timeout=PUBLISH_TIMEOUT_S))


# --- the command ----------------------------------------------------------------------------------
NOTHING_MATCHED = 3  # exit code: a selection by run id or data source found no dead letter


def replay(settings: Settings, selection: Selection, *, dry_run: bool, out: TextIO,
           as_json: bool = False) -> int:
    """`etl-worker replay`; 0 unless a republish failed (1), there is no hold subscription (2), or
    a selection by run id or data source matched nothing (3)."""
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    project = settings.gcp_project_id
    hold = subscriber.subscription_path(project, dead_letter_subscription(settings))
    queue = DeadLetterQueue(subscriber, hold)
    republisher = Republisher(publisher, publisher.topic_path(project, settings.etl_request_topic))
    from worker.history import flush_history, recording  # the history's BigQuery client, only here

    events = recording(settings, PubSubEventBus(project, settings.etl_events_topic))
    try:
        return run_replay(queue, republisher, selection, dry_run=dry_run, out=out, events=events,
                          as_json=as_json)
    except gexc.NotFound:
        out.write(f"{hold} does not exist: run `etl-worker setup` first\n")
        return 2
    finally:
        flush_history(events)
        subscriber.close()


def run_replay(queue: DeadLetters, republisher: RequestPublisher, selection: Selection, *,
               dry_run: bool, out: TextIO, events: EventBus | None = None, as_json: bool = False) -> int:
    """Pull, show, republish the chosen ones (ack each after its confirmation, once `events` has
    its run.replayed), release the rest."""
    items = [describe(letter) for letter in queue.pull()]
    selected = selection.choose(items)
    replaying = [pick and not dry_run for pick in selected]
    # Released first, so what stays is available again while the rest is republished.
    queue.release([item.letter for item, pick in zip(items, replaying, strict=True) if not pick])
    now = utcnow()
    rows, failures = [], 0
    for item, pick, go in zip(items, selected, replaying, strict=True):
        action = _replay_one(queue, republisher, item, events) if go else "would replay" if pick else "keep"
        failures += action.startswith("FAILED")
        rows.append(_row(item, action, now))
    summary = _summary(len(items), sum(selected), failures, dry_run, selection)
    if as_json:
        _print_json(out, items, rows, summary)
    else:
        _print(out, rows, summary)
    if failures:
        return 1
    narrowed = (selection.run_ids or selection.data_source_ids) and not selection.everything
    return NOTHING_MATCHED if narrowed and not any(selected) else 0


def _replay_one(queue: DeadLetters, republisher: RequestPublisher, item: Described,
                events: EventBus | None) -> str:
    attributes = replay_attributes(item)
    try:
        new_id = republisher.publish(item.letter.data, attributes)
    except Exception as exc:  # not confirmed: the dead letter stays (released at its ack deadline)
        log.error("republish of dead letter %s failed: %s", item.letter.message_id, redact(str(exc)))
        return f"FAILED: {type(exc).__name__}"
    if events is not None:
        _announce(events, item, attributes)
    queue.ack(item.letter)
    log.info("dead letter %s of run %s replayed as message %s", item.letter.message_id, item.run_id, new_id)
    return f"replayed as {new_id}"


def _announce(events: EventBus, item: Described, attributes: Mapping[str, str]) -> None:
    """run.replayed on the events topic, so Django sees the run leave the dead letters. Best effort:
    the request is already back on its topic, and its deliveries report for themselves."""
    request = _decode(item.letter.data)
    event = replayed_event(
        run_id=item.run_id, data_source_id=item.data_source_id,
        etl_run_id=request.etl_run_id if request else None,
        dest_table=request.dest_table_name if request else None,
        load_type=request.load_type if request else None,
        attempts_so_far=prior_attempts(attributes), replay_of=item.letter.message_id,
        replay_count=_count(attributes.get(c.ATTR_REPLAY_COUNT)) or 1,
        context=request.context if request else None,
    )
    try:
        events.publish(event)
    except Exception as exc:
        log.error("run.replayed of run %s not published (the request was replayed): %s", item.run_id,
                  redact(str(exc)))


# --- output ---------------------------------------------------------------------------------------
def _row(item: Described, action: str, now: datetime) -> tuple[str, ...]:
    age = format_age(now - item.first_published) if item.first_published else "?"
    source = "-" if item.data_source_id is None else str(item.data_source_id)
    attempts = "?" if item.attempts is None else str(item.attempts)
    return (item.letter.message_id, item.run_id, source, item.table, attempts, age, UNKNOWN_ERROR, action)


def format_age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    lines = [tuple(headers), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines]


def _summary(total: int, selected: int, failures: int, dry_run: bool, selection: Selection) -> str:
    if not total:
        return "no dead-lettered requests"
    if not selection.given:
        return (f"{total} dead-lettered request(s); nothing replayed "
                "(choose with --run-id, --data-source-id or --all)")
    if dry_run:
        return f"{total} dead-lettered request(s); dry run: {selected} would be replayed"
    note = f", {failures} FAILED (left in the dead-letter topic)" if failures else ""
    return f"{total} dead-lettered request(s); {selected - failures} replayed{note}"


def _print_json(out: TextIO, items: Sequence[Described], rows: Sequence[Sequence[str]], summary: str) -> None:
    """One JSON object per dead letter, then the summary: for scripts (and Django's dead-letter page)."""
    for item, row in zip(items, rows, strict=True):
        out.write(redact(json.dumps({
            "dead_letter": item.letter.message_id, "run_id": item.run_id,
            "data_source_id": item.data_source_id, "table": item.table, "attempts": item.attempts,
            "action": row[-1]})) + "\n")
    out.write(redact(json.dumps({"summary": summary})) + "\n")
    out.flush()


def _print(out: TextIO, rows: Sequence[Sequence[str]], summary: str) -> None:
    if rows:
        for line in format_table(HEADERS, rows):
            out.write(redact(line) + "\n")
        out.write(f"(last error: {UNKNOWN_ERROR}: Pub/Sub keeps none with a dead letter; "
                  "see the run's run.failed events)\n")
    out.write(redact(summary) + "\n")
    out.flush()
