"""An unreachable source: retried, dead-lettered; once the source is back, the dead-letter page's two
actions: a new run with the job's current settings, and a replay (the worker's CLI in a subprocess)
that completes the same run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from etl.models import ProcessedEvent, Run, RunState
from etl.publisher import request_run

from tests.django_ref.conftest import Harness
from tests.e2e.relay import Relay
from tests.e2e.test_replay import wait_dead_letters


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay(target_port=5432)  # nothing listens on relay.port until start()
    try:
        yield relay
    finally:
        relay.stop()


def test_unreachable_source_is_retried_dead_lettered_and_replayed_to_completion(
    etl: Harness, relay: Relay,
) -> None:
    admin = Client()
    admin.force_login(User.objects.create_superuser("admin", "admin@example.invalid", "unused"))
    job = etl.job("catalog", source=etl.data_source(port=relay.port))
    # Given a run whose source refuses connections on every one of the 5 deliveries
    run = etl.wait_state(request_run(job), RunState.DEAD_LETTERED)
    assert (run.attempt, run.error_type, run.error_retryable) == (5, "SourceConnectionError", True)
    assert run.dead_letter_topic == etl.env["ETL_DEAD_LETTER_TOPIC"] and run.will_retry is False
    # (retrying after each of the first four; the fifth run.failed says no retry, then dead-lettered)
    assert etl.states_seen(run) == [RunState.RETRYING, RunState.FAILED, RunState.DEAD_LETTERED]
    page = admin.get(reverse("admin:etl_run_dead_letters")).content.decode()
    assert run.run_id in page and "SourceConnectionError" in page

    # When the source is back and the operator first starts a new run from the dead-letter page
    relay.start()
    admin.post(reverse("admin:etl_run_dead_letters"), {"run": run.pk, "action": "new_run"})
    fresh = etl.wait_state(Run.objects.exclude(pk=run.pk).get(job=job), RunState.COMPLETED)
    # Then that is another run (a new etl_run_id) with the job's settings, and the old one still waits
    assert fresh.request["etl_run_id"] == fresh.pk != run.pk
    etl.assert_matches_ledger(fresh)
    assert Run.objects.get(pk=run.pk).state == RunState.DEAD_LETTERED

    # When the operator also presses Replay on the dead-lettered one
    wait_dead_letters(etl.stack, 1)  # Pub/Sub moved it to the hold subscription
    response = admin.post(reverse("admin:etl_run_dead_letters"), {"run": run.pk, "action": "replay"})
    page = response.content.decode()
    assert "1 replayed" in page and f"replay --run-id {run.run_id}" in page, page
    # Then the same run (same id) goes on at attempt 6 and completes, rows loaded once
    run = etl.wait_state(run, RunState.COMPLETED)
    assert (run.attempt, run.replay_count, run.error_type) == (6, 1, "")
    assert ProcessedEvent.objects.filter(run=run, event_type="run.replayed").count() == 1
    seen = etl.states_seen(run)
    # run.replayed may come before or after attempt 6's run.started (docs/events.md)
    assert seen[3:] in ([RunState.REPLAYED, RunState.RUNNING, RunState.COMPLETED],
                        [RunState.RUNNING, RunState.COMPLETED]), seen
    etl.assert_matches_ledger(run)
    assert etl.dest_count() == 250  # a catalog: each run replaced the table
    page = admin.get(reverse("admin:etl_run_dead_letters")).content.decode()
    assert "No dead-lettered runs." in page
