"""`merge` end to end on PostgreSQL and MariaDB: a mutable table kept in step without reloading it.
Updated rows replace their earlier version, new rows arrive, hard-deleted rows go (reconcile), and
the destination equals the source exactly, by key, every column."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery

from tests.e2e.sources import SeededSource, normalise, orders_table
from tests.e2e.stack import Stack, bq_rows, serving


def dest_rows(bq_client: bigquery.Client, stack: Stack) -> list[tuple[Any, ...]]:
    return [normalise(r) for r in bq_rows(bq_client, stack.settings.bigquery_dataset, "orders", "id")]


def change_rows(source: SeededSource) -> None:
    """Update rows 10..19 (a new note, stamped now), hard-delete 30..32, insert 1000..1004 now."""
    table = orders_table(source.schema)
    with source.engine.begin() as conn:
        clock = "now()" if source.dialect == "postgresql" else "NOW(6)"
        now = conn.execute(sa.text(f"SELECT {clock}")).scalar_one()
        conn.execute(table.update().where(table.c.id.between(10, 19))
                     .values(note="changed", qty=table.c.qty + 100, created_at=now))
        conn.execute(table.delete().where(table.c.id.between(30, 32)))
    source.insert_now(1000, 5)


def test_merge_keeps_a_changing_table_in_step_by_key(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    request = orders_source.request("merge", timestamp_column="created_at", reconcile_deletes=True)
    with serving(stack.settings):
        # Given a first merge run from the historical start date
        stack.publish({**request, "etl_run_id": 701})
        first = stack.wait_terminal("etl-run-701")[0]
        assert first["event_type"] == "run.completed", first
        assert dest_rows(bq_client, stack) == orders_source.rows()
        # When rows change, disappear and appear, and the next run starts at the watermark
        change_rows(orders_source)
        stack.publish({**request, "etl_run_id": 702, "last_sync_value": first["watermark"]})
        second = stack.wait_terminal("etl-run-702")[0]
    # Then only the changed and new rows were read, and BigQuery equals the source exactly
    assert second["event_type"] == "run.completed", second
    assert second["rows_loaded"] == 15 and second["window_low"] == first["window_high"]
    assert dest_rows(bq_client, stack) == orders_source.rows()
    assert len(orders_source.rows()) == 252
    assert stack.undelivered_requests() == 0


def test_merge_without_reconcile_keeps_hard_deleted_rows_and_updates_in_place(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    request = orders_source.request("merge", timestamp_column="created_at")
    with serving(stack.settings):
        stack.publish({**request, "etl_run_id": 711})
        first = stack.wait_terminal("etl-run-711")[0]
        change_rows(orders_source)
        stack.publish({**request, "etl_run_id": 712, "last_sync_value": first["watermark"]})
        assert stack.wait_terminal("etl-run-712")[0]["event_type"] == "run.completed"
    rows = dest_rows(bq_client, stack)
    source = {r[0]: r for r in orders_source.rows()}
    # Every source row once, in its current version; the three deleted rows stay (no reconcile)
    assert [r for r in rows if r[0] in source] == list(source.values())
    assert sorted(r[0] for r in rows if r[0] not in source) == [30, 31, 32]


def test_a_merge_of_a_table_without_a_primary_key_fails_permanently_naming_the_fix(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    quote = '"' if orders_source.dialect == "postgresql" else "`"
    with orders_source.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {quote}{orders_source.schema}{quote}.events (id int, at "
                             f"{'timestamptz' if orders_source.dialect == 'postgresql' else 'datetime'})")
    request = orders_source.request("merge", timestamp_column="at", source_table_name="events",
                                    dest_table_name="events", etl_run_id=721)
    with serving(stack.settings):
        stack.publish(request)
        failed = stack.wait_terminal("etl-run-721")[0]
    assert failed["event_type"] == "run.failed"
    assert failed["error"]["type"] == "ConfigurationError" and not failed["error"]["retryable"]
    assert "primary_key" in failed["error"]["message"]
    dataset = f"{bq_client.project}.{stack.settings.bigquery_dataset}"
    tables = {t.table_id for t in bq_client.list_tables(dataset)}
    assert "events" not in tables  # nothing was created before the problem was found
