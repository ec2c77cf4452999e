"""The reference Django app end to end: Run Now, transactional windows, a permanent failure, a
scheduled run adopted. Each test ends with Django's rows matching BigQuery and the ledger."""

from __future__ import annotations

import json
from io import StringIO

import jsonschema
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from etl.contract import load_schema
from etl.models import Job, OutboxMessage, ProcessedEvent, Run, RunOrigin, RunState
from etl.publisher import request_run

from tests.django_ref.conftest import PASSWORD_ENV, Harness


@pytest.fixture
def admin(django_db: str) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "admin@example.invalid", "unused"))
    return client


def test_run_now_catalog_run_completes_with_bigquery_counts(etl: Harness, admin: Client) -> None:
    # Given a catalog job whose data source names its password by reference
    job = etl.job("catalog")
    # When an admin presses Run Now
    response = admin.post(reverse("admin:etl_job_changelist"),
                          {"action": "run_now", "_selected_action": [job.pk]}, follow=True)
    assert response.status_code == 200
    run = Run.objects.get(job=job)
    # Then the Run existed before its request was published, which carried ids and no password
    assert run.published_at is not None and run.message_id, run.publish_error
    jsonschema.validate(run.request, load_schema("etl-run-requested"))
    assert run.request["etl_run_id"] == run.pk and run.run_id == f"etl-run-{run.pk}"
    assert run.request["context"] == {"job_id": job.pk, "run_id": run.pk, "environment": "test"}
    assert run.request["connection_params"]["password_env"] == PASSWORD_ENV
    assert "password" not in run.request["connection_params"]
    # And once the events are applied the run is completed with BigQuery's counts
    run = etl.wait_state(run, RunState.COMPLETED)
    assert (run.rows_extracted, run.rows_loaded, run.source_row_count) == (250, 250, 250)
    assert etl.dest_count() == 250
    etl.assert_matches_ledger(run)
    assert run.fraction == 1.0 and etl.states_seen(run) == [RunState.RUNNING, RunState.COMPLETED]
    # And the admin list shows it with a full progress bar
    page = admin.get(reverse("admin:etl_run_changelist")).content.decode()
    assert 'value="1.0000" max="1">100%</progress>' in page and run.run_id in page


def test_transactional_runs_advance_last_sync_value_from_committed_watermarks(etl: Harness) -> None:
    job = etl.job("transactional")
    # Given a first run from the historical start date (published on commit)
    first = etl.wait_state(request_run(job), RunState.COMPLETED)
    job.refresh_from_db()
    assert first.rows_loaded == 250 and first.window_low.startswith("2020-01-01")
    assert (job.last_sync_value, job.last_sync_key) == (first.watermark, first.watermark_key)
    # When new rows arrive and a second run goes through the outbox instead
    etl.source.insert_now(1000, 40)
    with override_settings(ETL={**settings.ETL, "PUBLISH_MODE": "outbox"}):
        second = request_run(job)
    assert Run.objects.get(pk=second.pk).published_at is None  # nothing sent before publish_outbox
    out = StringIO()
    call_command("publish_outbox", stdout=out)
    assert "1 published, 0 failed" in out.getvalue()
    assert OutboxMessage.objects.get(run=second).published_at is not None
    second = etl.wait_state(second, RunState.COMPLETED)
    job.refresh_from_db()
    # Then the second window starts at the first's watermark, sent back as last_sync_value
    assert second.request["last_sync_value"] == first.watermark
    assert second.window_low == first.window_high and second.rows_loaded == 40
    assert (job.last_sync_value, job.last_sync_key) == (second.watermark, second.watermark_key)
    assert second.watermark_key > first.watermark_key
    # And the job's watermark moved only when a run.completed was applied
    moves = [outcome.event_type for outcome, _ in etl.outcomes if outcome.watermark_advanced]
    assert moves == ["run.completed", "run.completed"]
    assert etl.dest_count() == 290 == first.rows_loaded + second.rows_loaded
    for run in (first, second):
        etl.assert_matches_ledger(run)


def test_unknown_table_fails_for_good_shows_the_error_and_a_new_run_succeeds(
    etl: Harness, admin: Client,
) -> None:
    # Given a job naming a table the source does not have
    job = etl.job("catalog", source_table="no_such_table")
    run = etl.wait_state(request_run(job), RunState.FAILED, RunState.COMPLETED)
    # Then the run failed permanently, after one attempt, with the worker's error
    assert run.state == RunState.FAILED
    assert (run.error_type, run.error_retryable, run.will_retry) == ("SourceSchemaError", False, False)
    assert "no_such_table" in run.error_message
    assert [e.event_type for e in ProcessedEvent.objects.filter(run=run)] == ["run.failed"]
    # And the admin shows the error
    page = admin.get(reverse("admin:etl_run_changelist")).content.decode()
    assert "SourceSchemaError" in page and "no_such_table" in page
    # When the job is fixed and "new run with current settings" is chosen
    Job.objects.filter(pk=job.pk).update(source_table="orders")
    admin.post(reverse("admin:etl_run_changelist"),
               {"action": "new_run_action", "_selected_action": [run.pk]}, follow=True)
    new = Run.objects.exclude(pk=run.pk).get(job=job)
    # Then a fresh run (a new etl_run_id) completes, and the failed one keeps its history
    new = etl.wait_state(new, RunState.COMPLETED)
    assert new.request["etl_run_id"] == new.pk != run.pk
    etl.assert_matches_ledger(new)
    assert etl.dest_count() == 250
    # And the failed run was never retried: still its one attempt (the emulator redelivers a nacked
    # request at once, so a second attempt would have been applied while the new run went through)
    assert Run.objects.get(pk=run.pk).state == RunState.FAILED
    assert list(ProcessedEvent.objects.filter(run=run).values_list("attempt", flat=True)) == [1]


def test_a_scheduled_request_is_adopted_as_a_run_of_its_job(etl: Harness) -> None:
    # Given a transactional job and the static body Cloud Scheduler publishes for it
    job = etl.job("transactional")
    out = StringIO()
    call_command("scheduler_body", job.pk, stdout=out)
    body = json.loads(out.getvalue())
    assert "etl_run_id" not in body and "last_sync_value" not in body
    assert body["context"]["job_id"] == job.pk
    # When it fires (published as Cloud Scheduler would: no attributes)
    message_id = etl.stack.publish(body)
    etl.consume_until(lambda: Run.objects.filter(run_id=f"msg-{message_id}", state="completed").exists())
    # Then Django adopted it as a new run of the job, and took its watermark
    run = Run.objects.get(run_id=f"msg-{message_id}")
    job.refresh_from_db()
    assert (run.job, run.origin, run.etl_run_id) == (job, RunOrigin.SCHEDULED, None)
    assert run.rows_loaded == 250 and job.last_sync_value == run.watermark
    etl.assert_matches_ledger(run)
    # When an older body without context fires after new rows arrived
    etl.source.insert_now(1000, 15)
    legacy = {key: value for key, value in body.items() if key != "context"}
    legacy_id = etl.stack.publish(legacy)
    etl.consume_until(lambda: Run.objects.filter(run_id=f"msg-{legacy_id}", state="completed").exists())
    # Then it is matched to the job by (data source, destination table)
    second = Run.objects.get(run_id=f"msg-{legacy_id}")
    job.refresh_from_db()
    assert second.job == job and second.context is None
    assert second.window_low == run.window_high and second.rows_loaded == 15
    assert job.last_sync_value == second.watermark
    etl.assert_matches_ledger(second)
    assert etl.dest_count() == 265
