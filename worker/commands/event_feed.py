"""The events topic as the operator commands read it: one ordered subscription per reader."""

from __future__ import annotations

from typing import Any

from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from worker.settings import Settings


def create_events_subscription(subscriber: pubsub_v1.SubscriberClient, settings: Settings, name: str,
                               retention_s: int, **fields: Any) -> str:
    """Create `name` on the events topic with message ordering (events of one run arrive in `seq`
    order) and `retention_s`; `fields` are the reader's own (ack deadline, retry and expiration
    policies). Returns its path; raises AlreadyExists or NotFound as Pub/Sub does."""
    project = settings.gcp_project_id
    path: str = subscriber.subscription_path(project, name)
    subscriber.create_subscription(request={
        "name": path,
        "topic": subscriber.topic_path(project, settings.etl_events_topic),
        "enable_message_ordering": True,
        "message_retention_duration": duration_pb2.Duration(seconds=retention_s),
        **fields,
    })
    return path
