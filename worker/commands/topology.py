"""`etl-worker setup`: create the topics and subscriptions idempotently (emulator or real Pub/Sub).

Real Pub/Sub also needs the Pub/Sub service agent to be allowed to publish to the dead-letter
topic and to subscribe to the worker subscription (see README, "Deploy").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from worker.settings import Settings

log = logging.getLogger(__name__)
DEAD_LETTER_HOLD_SUFFIX = "-hold"


@dataclass(frozen=True)
class Created:
    kind: str
    path: str
    created: bool  # False: found already

    def __str__(self) -> str:
        return f"{'created' if self.created else 'found  '} {self.kind:<12} {self.path}"


def setup(settings: Settings) -> list[Created]:
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    project = settings.gcp_project_id
    topics = {name: publisher.topic_path(project, name) for name in (
        settings.etl_request_topic, settings.etl_events_topic, settings.etl_dead_letter_topic)}
    results = [_ensure_topic(publisher, path) for path in topics.values()]
    results.append(_ensure_subscription(subscriber, _worker_subscription(settings, topics)))
    hold = pubsub_v1.types.Subscription(
        name=subscriber.subscription_path(project, settings.etl_dead_letter_topic + DEAD_LETTER_HOLD_SUFFIX),
        topic=topics[settings.etl_dead_letter_topic],
        ack_deadline_seconds=60,
        message_retention_duration=duration_pb2.Duration(seconds=7 * 24 * 3600),
    )
    results.append(_ensure_subscription(subscriber, hold))
    subscriber.close()
    return results


def dead_letter_subscription(settings: Settings) -> str:
    return settings.etl_dead_letter_topic + DEAD_LETTER_HOLD_SUFFIX


def _worker_subscription(settings: Settings, topics: dict[str, str]) -> pubsub_v1.types.Subscription:
    return pubsub_v1.types.Subscription(
        name=pubsub_v1.SubscriberClient.subscription_path(
            settings.gcp_project_id, settings.etl_request_subscription),
        topic=topics[settings.etl_request_topic],
        ack_deadline_seconds=settings.etl_ack_deadline_s,
        retry_policy=pubsub_v1.types.RetryPolicy(
            minimum_backoff=duration_pb2.Duration(seconds=settings.etl_retry_min_backoff_s),
            maximum_backoff=duration_pb2.Duration(seconds=settings.etl_retry_max_backoff_s),
        ),
        dead_letter_policy=pubsub_v1.types.DeadLetterPolicy(
            dead_letter_topic=topics[settings.etl_dead_letter_topic],
            max_delivery_attempts=settings.etl_max_delivery_attempts,
        ),
        message_retention_duration=duration_pb2.Duration(seconds=7 * 24 * 3600),
    )


def _ensure_topic(publisher: pubsub_v1.PublisherClient, path: str) -> Created:
    try:
        publisher.create_topic(name=path)
        return Created("topic", path, True)
    except gexc.AlreadyExists:
        return Created("topic", path, False)


def _ensure_subscription(
    subscriber: pubsub_v1.SubscriberClient, subscription: pubsub_v1.types.Subscription
) -> Created:
    try:
        subscriber.create_subscription(request=subscription)
        return Created("subscription", subscription.name, True)
    except gexc.AlreadyExists:
        return Created("subscription", subscription.name, False)
