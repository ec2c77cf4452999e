"""Jobs end to end on PostgreSQL and MariaDB: three related tables (customers ← orders ← lines) read
in ONE source snapshot and applied in ONE BigQuery transaction; a failure in the third table leaves
every destination as it was; a concurrent writer never leaves a child without its parent in
BigQuery; a redelivered job loads nothing twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import Emulator
from tests.conftest import PROJECT
from tests.e2e.oneshot import RunOnce, run_once
from tests.e2e.shop import Shop, orphans, seed_shop, writing_between_statements
from tests.e2e.sources import fresh_database
from tests.e2e.stack import Stack, bq_count, make_settings, serving
from worker.messages import RunCompleted, RunFailed, json_schema

__all__ = ["run_once"]
FAMILIES = 20  # customers, each with an order of two lines
DESTINATIONS = ("customers", "orders", "order_lines")


@pytest.fixture(params=["postgresql", "mysql"])
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    """customers, orders and order_lines of FAMILIES families in PostgreSQL or MariaDB."""
    yield seed_shop(*fresh_database(request), FAMILIES)


def bq_ids(client: bigquery.Client, dataset: str, table: str) -> list[int]:
    query = f"SELECT id FROM `{PROJECT}.{dataset}.{table}` ORDER BY id"
    return [row["id"] for row in client.query(query).result()]


def copies(client: bigquery.Client, dataset: str) -> dict[str, list[int]]:
    return {table: bq_ids(client, dataset, table) for table in DESTINATIONS}


def sources(shop: Shop) -> dict[str, list[int]]:
    return {table: shop.ids_of(table) for table in DESTINATIONS}


def ledger_rows(client: bigquery.Client, dataset: str) -> list[dict[str, Any]]:
    query = (f"SELECT run_id, dest_table, table_index FROM `{PROJECT}.{dataset}._etl_ledger` "
             "ORDER BY run_id, table_index")
    return [dict(row) for row in client.query(query).result()]


def completed(events: list[Any]) -> RunCompleted:
    last = events[-1]
    assert isinstance(last, RunCompleted), last
    jsonschema.validate(last.model_dump(mode="json"), json_schema("run.completed"))
    return last


def test_a_three_table_job_is_applied_atomically(
    shop: Shop, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # When a job of three related tables runs
    events = run_once(shop.job(1), "etl-run-1")
    # Then every destination holds its source table, and the ledger one row per table
    assert copies(bq_client, bq_dataset) == sources(shop)
    assert ledger_rows(bq_client, bq_dataset) == [
        {"run_id": "etl-run-1", "dest_table": name, "table_index": i} for i, name in enumerate(DESTINATIONS)]
    # And run.completed lists each table's counters and watermark for Django
    done = completed(events)
    assert [(t.dest_table, t.load_type, t.rows_loaded) for t in done.tables] == [
        ("customers", "merge", FAMILIES), ("orders", "transactional", FAMILIES),
        ("order_lines", "catalog", 2 * FAMILIES)]
    assert all(t.watermark for t in done.tables[:2]) and done.tables[2].watermark is None
    assert done.rows_loaded == 4 * FAMILIES and done.dest_table is None
    started = [e for e in events if e.event_type == "run.started"]
    assert [e.table for e in started] == list(DESTINATIONS)
    # And the next job goes on from each table's own watermark
    shop.add_families(3)
    again = completed(run_once(shop.job(2), "etl-run-2"))
    assert [t.rows_loaded for t in again.tables] == [3, 3, 2 * (FAMILIES + 3)]
    assert [t.window_low for t in again.tables[:2]] == [t.watermark for t in done.tables[:2]]
    assert copies(bq_client, bq_dataset) == sources(shop)


def break_third_table(shop: Shop, how: str) -> dict[str, Any]:
    """The third table's fields for a job that must fail there (and how its source changes)."""
    if how == "quality":
        return {"quality_rules": [{"rule": "min_rows", "value": 1_000_000}]}
    # its source column changes type, which the BigQuery column cannot take; meanwhile the first
    # table gained a column, which must not be added to its destination when the job is refused
    lines = f'"{shop.source.schema}".order_lines' if shop.source.dialect == "postgresql" else (
        f"`{shop.source.schema}`.order_lines")
    customers = lines.replace("order_lines", "customers")
    change = "ALTER COLUMN qty TYPE text" if shop.source.dialect == "postgresql" else "MODIFY qty text"
    with shop.source.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {lines} {change}"))
        conn.execute(sa.text(f"ALTER TABLE {customers} ADD COLUMN tier text"))
    return {}


@pytest.mark.parametrize("how", ["quality", "schema"])
def test_a_failure_in_the_third_table_leaves_all_three_destinations_unchanged(
    shop: Shop, how: str, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a committed job, and new rows in every table since
    run_once(shop.job(1), "etl-run-1")
    before, schema_before = copies(bq_client, bq_dataset), _schemas(bq_client, bq_dataset)
    shop.add_families(5)
    third = break_third_table(shop, how)
    # When the next job fails in its third table
    failed = run_once(shop.job(2, **third), "etl-run-2")[-1]
    assert isinstance(failed, RunFailed) and not failed.error.retryable
    expected = {
        "quality": ("DataQualityError", "table order_lines: quality rule min_rows"),
        "schema": ("SchemaMismatchError", "column 'qty': destination has INT64, source now gives STRING"),
    }
    assert failed.error.type == expected[how][0] and expected[how][1] in failed.error.message
    # Then no destination changed, not even a schema, and the ledger holds only the first job
    assert copies(bq_client, bq_dataset) == before
    assert _schemas(bq_client, bq_dataset) == schema_before
    assert {row["run_id"] for row in ledger_rows(bq_client, bq_dataset)} == {"etl-run-1"}


def _schemas(client: bigquery.Client, dataset: str) -> dict[str, list[str]]:
    return {table: [f.name for f in client.get_table(f"{PROJECT}.{dataset}.{table}").schema]
            for table in DESTINATIONS}


@pytest.mark.parametrize("shape", ["catalog", "windowed"])
def test_a_concurrent_writer_never_leaves_a_child_without_its_parent(
    shop: Shop, shape: str, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a writer adding customers with their orders and lines while every job reads
    with writing_between_statements(shop) as written:
        for run in range(1, 4):
            completed(run_once(shop.job(run, shape), f"etl-run-{run}"))
            # Then after every run each order has its customer and each line its order
            assert orphans(bq_client, bq_dataset) == {"orders": 0, "order_lines": 0}, run
            assert copies(bq_client, bq_dataset) != sources(shop)  # the writer wrote meanwhile
    assert len(written) > 3 * len(DESTINATIONS)
    # And once the writer stops, one more job brings BigQuery up to the source exactly
    run_once(shop.job(4, shape), "etl-run-4")
    assert copies(bq_client, bq_dataset) == sources(shop)


@pytest.fixture
def job_stack(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Stack:
    return Stack(make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                               ETL_BATCH_SIZE=7, ETL_PART_ROWS=11))


def test_a_job_delivered_twice_and_replayed_loads_nothing_twice(
    shop: Shop, job_stack: Stack, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    job = shop.job(77)
    # When the same job is published twice and both are delivered
    with serving(job_stack.settings):
        job_stack.publish(job)
        job_stack.publish(job)
        first, second = job_stack.wait_terminal("etl-run-77", count=2)
    # Then both report the same committed job: the very same event
    assert first["event_type"] == "run.completed" and first == second
    assert [t["dest_table"] for t in first["tables"]] == list(DESTINATIONS)
    # And a later replay of it reports it again, reading and loading nothing
    shop.add_families(2)
    replayed = completed(run_once(job, "etl-run-77"))
    assert replayed.event_id == first["event_id"] and replayed.tables[0].rows_loaded == FAMILIES
    assert [bq_count(bq_client, bq_dataset, t) for t in DESTINATIONS] == [FAMILIES, FAMILIES, 2 * FAMILIES]
    assert len(ledger_rows(bq_client, bq_dataset)) == 3
    assert job_stack.undelivered_requests() == 0

