"""`etl-worker notify`: alerts on Slack and/or by e-mail from the events topic.

It reads events through a subscription of its own (ETL_NOTIFY_SUBSCRIPTION, created if missing,
ordered by run id, with a retry policy), so it takes nothing from Django or `watch`. For each
event: skip it if its `event_id` was processed; else decide (worker/commands/alerting.py), send each
alert on each channel not yet sent (a mark per alert and channel, so a retry after a partial
failure sends only what is missing), then store the event as processed together with the new
incident state, and ack. A send that fails raises: the event is nacked and comes back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.protobuf import duration_pb2

from worker.commands.alert_channels import Channel, SendError, channels_from
from worker.commands.alert_rules import Rules, load_rules
from worker.commands.alert_state import StateStore
from worker.commands.alerting import decide, subjects_of
from worker.commands.event_feed import create_events_subscription
from worker.logs import redact
from worker.settings import Settings

log = logging.getLogger(__name__)
PRUNE_EVERY = 1000  # processed events between two prunes of the state
MAX_BACKOFF_S = 600
RETENTION_S = 7 * 86_400


class Notifier:
    """Turns one event into its alerts, exactly once per incident (thread-safe)."""

    def __init__(self, store: StateStore, rules: Rules, channels: Sequence[Channel]) -> None:
        self._store = store
        self._rules = rules
        self._channels = list(channels)
        self._lock = threading.Lock()
        self._handled = 0

    @property
    def channel_names(self) -> list[str]:
        return [channel.name for channel in self._channels]

    def handle(self, data: bytes) -> None:
        """Return once the event's alerts are sent and its state stored; raise SendError if not."""
        event = _parse(data)
        if event is None:
            return
        with self._lock:
            if self._store.processed(event["event_id"]):
                return
            try:
                decision = decide(event, self._store.tracks(subjects_of(event)), self._rules)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # never retry a poison message
                log.warning("ignoring malformed event %s: %s", event["event_id"], exc)
                self._store.commit(event["event_id"], {})
                return
            for alert in decision.alerts:
                for channel in self._channels:
                    if not self._store.was_sent(alert.alert_id, channel.name):
                        channel.send(alert)
                        self._store.mark_sent(alert.alert_id, channel.name)
                        log.info("alert sent on %s: %s", channel.name, alert.title)
            if decision.tracks or decision.alerts or event.get("event_type") != "run.progress":
                self._store.commit(event["event_id"], decision.tracks)
            self._handled += 1
            if self._handled % PRUNE_EVERY == 0:
                self._store.prune()


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(data)
        if isinstance(event, dict) and all(k in event for k in ("event_id", "event_type", "run_id",
                                                                  "occurred_at")):
            return event
    except ValueError:
        pass
    log.warning("ignoring a message that is not a run event (%d bytes)", len(data))
    return None


def ensure_subscription(subscriber: pubsub_v1.SubscriberClient, settings: Settings) -> str:
    """notify's subscription, created if missing; raises NotFound when the topic does not exist."""
    name = settings.etl_notify_subscription
    try:
        path = create_events_subscription(
            subscriber, settings, name, RETENTION_S, ack_deadline_seconds=60,
            retry_policy={
                "minimum_backoff": duration_pb2.Duration(seconds=settings.etl_notify_retry_min_backoff_s),
                "maximum_backoff": duration_pb2.Duration(seconds=MAX_BACKOFF_S)},
            expiration_policy={})  # never expires
        log.info("created subscription %s on %s", path, settings.etl_events_topic)
    except gexc.AlreadyExists:
        path = subscriber.subscription_path(settings.gcp_project_id, name)
    return path


def build_notifier(settings: Settings, rules_file: str | None = None) -> tuple[Notifier, StateStore]:
    channels = channels_from(settings)
    if not channels:
        raise ValueError("no alert channel: set ETL_ALERT_SLACK_WEBHOOK_URL and/or ETL_ALERT_SMTP_HOST "
                         "(with ETL_ALERT_EMAIL_FROM and ETL_ALERT_EMAIL_TO)")
    rules = load_rules(rules_file or settings.etl_notify_rules_file)
    store = StateStore(settings.etl_notify_state_dir)
    store.prune()
    return Notifier(store, rules, channels), store


def notify(settings: Settings, *, stop: threading.Event, rules_file: str | None = None,
           ready: threading.Event | None = None) -> int:
    """Alert from the events topic until `stop` is set."""
    notifier, store = build_notifier(settings, rules_file)
    for subject, incident in store.open_incidents():
        log.info("open incident: %s %s since %s", subject.label, incident.kind, incident.opened_at)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        path = ensure_subscription(subscriber, settings)
    except gexc.NotFound:
        log.error("topic %s does not exist: run `etl-worker setup` first", settings.etl_events_topic)
        subscriber.close()
        store.close()
        return 2

    def on_message(message: Message) -> None:
        try:
            notifier.handle(bytes(message.data))
        except SendError as exc:
            log.error("alert not sent, the event comes back: %s", redact(str(exc)))
            message.nack()
            return
        except Exception as exc:  # the state could not be stored, say: keep the event
            log.exception("event %s not processed: %s", message.message_id, redact(str(exc)))
            message.nack()
            return
        message.ack()

    flow = pubsub_v1.types.FlowControl(max_messages=100, max_duration_per_lease_extension=60)
    future = subscriber.subscribe(path, on_message, flow_control=flow, await_callbacks_on_shutdown=True)
    log.info("notify: alerting from %s on %s", path, ", ".join(notifier.channel_names))
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(0.5):
            if future.done():
                future.result()  # the stream died: raise
    finally:
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=30)
        subscriber.close()
        store.close()
    return 0
