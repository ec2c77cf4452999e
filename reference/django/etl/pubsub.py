"""Pub/Sub, the only way Django and the worker talk. PUBSUB_EMULATOR_HOST points the clients at
the emulator (the client library reads it)."""

from __future__ import annotations

import contextlib
import logging
import threading

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from etl.conf import etl_setting

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 60.0
EVENTS_ACK_DEADLINE_S = 60

_lock = threading.Lock()
_publisher: pubsub_v1.PublisherClient | None = None


def publisher() -> pubsub_v1.PublisherClient:
    """One client per process (it is thread-safe and holds a channel)."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = pubsub_v1.PublisherClient()
        return _publisher


def topic_path(topic: str) -> str:
    return pubsub_v1.PublisherClient.topic_path(etl_setting("GCP_PROJECT_ID"), topic)


def subscription_path(subscription: str) -> str:
    return pubsub_v1.SubscriberClient.subscription_path(etl_setting("GCP_PROJECT_ID"), subscription)


def publish_request(data: bytes, attributes: dict[str, str] | None = None) -> str:
    """Publish to the request topic; the message id once Pub/Sub confirmed it. No attribute is
    needed (docs/events.md): the body says everything."""
    future = publisher().publish(topic_path(etl_setting("REQUEST_TOPIC")), data, **(attributes or {}))
    return str(future.result(timeout=PUBLISH_TIMEOUT_S))


def ensure_events_subscription(subscriber: pubsub_v1.SubscriberClient, name: str | None = None) -> str:
    """Django's ordered subscription on the events topic (and the topic), made if missing.

    It must exist before the first run: Pub/Sub keeps nothing for a subscription that does not exist
    yet. Ordering: the worker publishes with ordering key = run id, so one run's events arrive in
    order, but only on a subscription with message ordering enabled."""
    path = subscription_path(name or etl_setting("EVENTS_SUBSCRIPTION"))
    topic = topic_path(etl_setting("EVENTS_TOPIC"))
    request = {"name": path, "topic": topic, "enable_message_ordering": True,
               "ack_deadline_seconds": EVENTS_ACK_DEADLINE_S}
    try:
        subscriber.create_subscription(request=request)
        log.info("created subscription %s on %s (ordered)", path, topic)
    except gexc.AlreadyExists:
        _check_ordered(subscriber, path)
    except gexc.NotFound:  # the topic: the worker's `setup` makes it too; either may come first
        with contextlib.suppress(gexc.AlreadyExists):
            publisher().create_topic(name=topic)
        subscriber.create_subscription(request=request)
    return path


def _check_ordered(subscriber: pubsub_v1.SubscriberClient, path: str) -> None:
    existing = subscriber.get_subscription(subscription=path)
    if not existing.enable_message_ordering:
        # Ordering cannot be switched on later. The consumer still ends in the right state (it orders
        # by (attempt, seq) itself and skips older events), but more events arrive late and are skipped.
        log.warning("subscription %s has no message ordering; recreate it to get ordered events", path)
