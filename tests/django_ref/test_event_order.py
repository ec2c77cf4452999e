"""Redelivered and out-of-order events end in the same state as the live, in-order stream.

The events are real: a transactional run that fails once (its source down) and completes on a later
attempt, then a second run. Django forgets what it applied and gets them all again through
`manage.py consume_events` on a second subscription: newest first (so a run.completed comes before
the run's older progress and failure, and the second run's watermark before the first's), then each
once more in shuffled order; and the first try of one event fails inside its transaction.
"""

from __future__ import annotations

import json
import random
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from etl import apply, state
from etl.models import Job, ProcessedEvent, Run, RunState
from etl.publisher import request_run
from google.cloud import pubsub_v1

from tests.django_ref.conftest import Harness
from tests.e2e.relay import Relay, pg_relay

__all__ = ["pg_relay"]  # the fixture `relay`


def snapshot(job: Job) -> dict[str, Any]:
    job.refresh_from_db()
    runs = {run.pk: run.outcome() for run in Run.objects.filter(job=job)}
    return {"runs": runs, "job": (job.last_sync_value, job.last_sync_key),
            "events": set(ProcessedEvent.objects.values_list("event_id", flat=True))}


def forget(job: Job) -> None:
    """Back to what Django knew before any event arrived: queued runs, no watermark, no dedupe rows."""
    fresh = {f.name: f.get_default() for f in Run._meta.fields if f.name in Run().outcome()}
    Run.objects.filter(job=job).update(**{**fresh, "state": RunState.QUEUED, "context": None})
    Job.objects.filter(pk=job.pk).update(last_sync_value=None, last_sync_key=None)
    ProcessedEvent.objects.all().delete()


def publish_in_order(etl: Harness, events: list[dict[str, Any]]) -> None:
    """One ordering key for the whole feed: delivered in exactly this order."""
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    topic = publisher.topic_path(etl.env["GCP_PROJECT_ID"], etl.env["ETL_EVENTS_TOPIC"])
    bodies = [json.dumps({k: v for k, v in e.items() if k != "_attributes"}).encode() for e in events]
    futures = [publisher.publish(topic, body, ordering_key="feed", **e["_attributes"])
               for body, e in zip(bodies, events, strict=True)]
    for future in futures:
        future.result(timeout=30)


def test_redelivered_and_shuffled_events_end_in_the_same_state(
    etl: Harness, relay: Relay, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = etl.job("transactional", source=etl.data_source(port=relay.port))
    # Given a first run that fails while the source is down and completes once it is back
    first = etl.wait_state(request_run(job), RunState.RETRYING)
    relay.start()
    first = etl.wait_state(first, RunState.COMPLETED)
    assert first.attempt >= 2
    # And a second run after new rows arrived
    etl.source.insert_now(1000, 40)
    second = etl.wait_state(request_run(job), RunState.COMPLETED)
    live = snapshot(job)
    assert live["job"] == (second.watermark, second.watermark_key)
    etl.stack.wait_for(lambda events: live["events"] <= {e["event_id"] for e in events})
    captured = [e for e in etl.stack.pull_events() if e["run_id"] in (first.run_id, second.run_id)]
    unique = {e["event_id"] for e in captured}
    assert unique == live["events"]

    # When Django forgets them and gets them again: newest first, then all again, shuffled
    forget(job)
    feed = [*reversed(captured), *random.Random(12).sample(captured, len(captured))]
    feed_subscription = etl.env["ETL_EVENTS_TOPIC"] + "-feed"
    call_command("consume_events", "--subscription", feed_subscription, "--setup-only", stdout=StringIO())
    publish_in_order(etl, feed)
    # And the database fails once, inside the transaction that applies the first run's run.completed
    real_apply = state.apply_event  # what etl.apply calls, before the patch
    failures: list[str] = []

    def failing_once(run: Run, event: dict[str, Any]) -> bool:
        # The older run's: redelivered later, it must still not pull the job's watermark back.
        if event["event_type"] == "run.completed" and event["run_id"] == first.run_id and not failures:
            failures.append(event["event_id"])
            raise RuntimeError("database went away")
        return real_apply(run, event)

    monkeypatch.setattr(apply, "apply_event", failing_once)
    out = StringIO()
    call_command("consume_events", "--subscription", feed_subscription, "--max-messages", str(len(feed) + 1),
                 "--max-seconds", "120", stdout=out)

    # Then every event was handled; the failed one was nacked, redelivered and applied once
    assert f"{len(feed) + 1} message(s)" in out.getvalue() and "1 error(s)" in out.getvalue(), out.getvalue()
    assert f"{len(feed) - len(unique)} duplicate(s)" in out.getvalue(), out.getvalue()
    # And Django ends where the live, in-order stream left it: runs, job watermark, dedupe rows
    assert snapshot(job) == live
    assert ProcessedEvent.objects.filter(event_id=failures[0]).count() == 1
