"""End to end: a request published with the real Pub/Sub client, processed by the real `serve` loop,
read from PostgreSQL/MariaDB and committed into the BigQuery emulator; events checked as Django
would read them."""

from __future__ import annotations

from typing import Any

import jsonschema
from google.cloud import bigquery

from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_count, bq_rows, serving
from worker.messages import json_schema


def assert_valid_event_stream(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """Every event valid against its schema; per attempt, in arrival order, seq strictly increasing
    and duration_seconds never decreasing (run.completed's, from the ledger, included)."""
    mine = [e for e in events if e["run_id"] == run_id]
    for event in mine:
        attributes = event.pop("_attributes")
        assert attributes == {"event_type": event["event_type"], "run_id": run_id,
                              "data_source_id": str(event["data_source_id"])}
        jsonschema.validate(event, json_schema(event["event_type"]))
    by_attempt: dict[int, list[tuple[int, float]]] = {}
    for event in mine:
        by_attempt.setdefault(event["attempt"], []).append((event["seq"], event["duration_seconds"]))
    for attempt in by_attempt.values():
        seqs, durations = [seq for seq, _ in attempt], [duration for _, duration in attempt]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), by_attempt
        assert durations == sorted(durations), by_attempt
    return mine


def dest_rows(bq_client: bigquery.Client, stack: Stack) -> list[tuple[Any, ...]]:
    return [normalise(r) for r in bq_rows(bq_client, stack.settings.bigquery_dataset, "orders", "id")]


def test_catalog_run_loads_exactly_the_source_rows(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    # Given a 250-row table and a catalog request as Django publishes it
    request = orders_source.request("catalog", etl_run_id=101)
    with serving(stack.settings):
        # When it is published and the worker serves the subscription
        stack.publish(request)
        terminal = stack.wait_terminal("etl-run-101")
    # Then BigQuery holds exactly the source rows, value by value
    assert dest_rows(bq_client, stack) == orders_source.rows()
    events = assert_valid_event_stream(stack.events, "etl-run-101")
    assert events[0]["event_type"] == "run.started"
    assert terminal[0]["event_type"] == "run.completed"
    completed = terminal[0]
    assert (completed["rows_extracted"], completed["rows_loaded"], completed["source_row_count"]) == (
        250, 250, 250)
    assert completed["batches_loaded"] == 3  # batch size 100
    assert completed["etl_run_id"] == 101 and completed["data_source_id"] == 7
    assert completed["watermark"] is None
    progress = [e for e in events if e["event_type"] == "run.progress"]
    assert progress and max(p["rows_extracted"] for p in progress) == 250
    # And the request was acked: nothing is left on the subscription
    assert stack.undelivered_requests() == 0


def test_catalog_run_replaces_previous_snapshot(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    with serving(stack.settings):
        stack.publish(orders_source.request("catalog", etl_run_id=1))
        stack.wait_terminal("etl-run-1")
        with orders_source.engine.begin() as conn:
            conn.exec_driver_sql(_delete_sql(orders_source, "id > 200"))
        stack.publish(orders_source.request("catalog", etl_run_id=2))
        assert stack.wait_terminal("etl-run-2")[0]["event_type"] == "run.completed"
    assert dest_rows(bq_client, stack) == orders_source.rows()
    assert bq_count(bq_client, stack.settings.bigquery_dataset, "orders") == 200


def test_transactional_runs_append_only_new_rows(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    with serving(stack.settings):
        # Given a first transactional run from the historical start date
        stack.publish(orders_source.request("transactional", etl_run_id=201))
        first = stack.wait_terminal("etl-run-201")[0]
        assert first["event_type"] == "run.completed", first
        assert first["rows_loaded"] == 250 and first["window_low"].startswith("2020-01-01")
        assert first["watermark"] == first["window_high"]
        # When new rows arrive and Django sends the watermark back as last_sync_value
        orders_source.insert_now(1000, 40)
        stack.publish(orders_source.request(
            "transactional", etl_run_id=202, last_sync_value=first["watermark"]))
        second = stack.wait_terminal("etl-run-202")[0]
    # Then only the new rows were appended, and the windows touch without overlapping
    assert second["event_type"] == "run.completed", second
    assert second["rows_loaded"] == 40
    assert second["window_low"] == first["window_high"]
    assert dest_rows(bq_client, stack) == orders_source.rows()
    assert_valid_event_stream(stack.events, "etl-run-202")


def test_same_request_delivered_twice_loads_rows_once(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    request = orders_source.request("transactional", etl_run_id=301)
    with serving(stack.settings):
        stack.publish(request)
        stack.publish(request)
        completions = stack.wait_terminal("etl-run-301", count=2)
    assert [e["event_type"] for e in completions] == ["run.completed", "run.completed"]
    # Both deliveries report the same committed run: the very same event
    assert completions[0]["event_id"] == completions[1]["event_id"]
    assert completions[0] == completions[1]
    assert dest_rows(bq_client, stack) == orders_source.rows()
    assert stack.undelivered_requests() == 0


def test_invalid_request_is_reported_and_acked(stack: Stack) -> None:
    body = {"data_source_id": 9, "etl_run_id": 401, "source_type": "oracle",
            "dest_table_name": "x", "load_type": "catalog"}
    with serving(stack.settings):
        stack.publish(body)
        failed = stack.wait_terminal("etl-run-401")[0]
    assert failed["event_type"] == "run.failed"
    assert failed["error"]["type"] == "MessageDecodeError"
    assert failed["error"]["retryable"] is False
    assert "source_type" in failed["error"]["message"]
    assert failed["data_source_id"] == 9
    assert stack.undelivered_requests() == 0


def test_unknown_table_fails_permanently_naming_it(
    stack: Stack, orders_source: SeededSource
) -> None:
    request = orders_source.request("catalog", etl_run_id=501, source_table_name="no_such_table")
    with serving(stack.settings):
        stack.publish(request)
        failed = stack.wait_terminal("etl-run-501")[0]
    assert failed["event_type"] == "run.failed"
    assert failed["error"]["type"] == "SourceSchemaError"
    assert "no_such_table" in failed["error"]["message"]
    assert failed["error"]["retryable"] is False
    assert stack.undelivered_requests() == 0


def test_unknown_column_fails_permanently_naming_it(
    stack: Stack, orders_source: SeededSource
) -> None:
    # Given an existing table, a selected column and a cursor column that it does not have
    selected = orders_source.request("catalog", etl_run_id=502, selected_columns=["id", "no_such_column"])
    cursor = orders_source.request("transactional", etl_run_id=503, timestamp_column="no_such_cursor")
    with serving(stack.settings):
        stack.publish(selected)
        stack.publish(cursor)
        failures = [stack.wait_terminal(f"etl-run-{n}")[0] for n in (502, 503)]
    # Then each fails permanently, naming the missing column, and nothing is left to redeliver
    for failed, name in zip(failures, ("no_such_column", "no_such_cursor"), strict=True):
        assert failed["event_type"] == "run.failed"
        assert failed["error"]["type"] == "SourceSchemaError" and not failed["error"]["retryable"]
        assert name in failed["error"]["message"]
    assert stack.undelivered_requests() == 0


def _delete_sql(source: SeededSource, where: str) -> str:
    quote = '"' if source.dialect == "postgresql" else "`"
    return f"DELETE FROM {quote}{source.schema}{quote}.orders WHERE {where}"


def test_a_cloud_scheduler_message_without_run_id_or_watermark_loads_each_row_once(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    # Given Cloud Scheduler's static body: no etl_run_id, no last_sync_value
    body = orders_source.request("transactional")
    with serving(stack.settings):
        # When it fires twice, with new rows in between
        first_id = stack.publish(body)
        first = stack.wait_terminal(f"msg-{first_id}")[0]
        orders_source.insert_now(2000, 15)
        second_id = stack.publish(body)
        second = stack.wait_terminal(f"msg-{second_id}")[0]
    # Then each firing is its own run, the second starting where the ledger says the first ended
    assert (first["event_type"], second["event_type"]) == ("run.completed", "run.completed")
    assert (first["rows_loaded"], second["rows_loaded"]) == (250, 15)
    assert second["window_low"] == first["window_high"]
    assert dest_rows(bq_client, stack) == orders_source.rows()
