"""A reused `etl_run_id` (a Django database reset, two environments sharing a dataset) is another
run, never "already committed": it fails permanently, says what the id was used for, loads nothing,
and its run.failed is not a duplicate of the old run's events."""

from __future__ import annotations

from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_rows, serving


def test_a_reused_etl_run_id_for_another_table_fails_permanently_and_loads_nothing(
    stack: Stack, orders_source: SeededSource, bq_client: bigquery.Client
) -> None:
    dataset = stack.settings.bigquery_dataset
    with serving(stack.settings):
        # Given etl_run_id 601 committed a catalog run of orders → orders
        stack.publish(orders_source.request("catalog", etl_run_id=601))
        first = stack.wait_terminal("etl-run-601")[0]
        assert first["event_type"] == "run.completed"
        # When a transactional request into another table arrives with the same etl_run_id
        stack.publish(orders_source.request("transactional", etl_run_id=601, dest_table_name="orders_copy"))
        failed = stack.wait_terminal("etl-run-601", count=2)[1]
    # Then it fails permanently, naming what the id was used for
    assert failed["event_type"] == "run.failed", failed
    assert failed["error"]["type"] == "RunIdConflictError" and failed["error"]["retryable"] is False
    assert f"{orders_source.schema}.orders → orders (catalog)" in failed["error"]["message"]
    # And its event is new to Django (not a duplicate of the committed run's events)
    assert failed["event_id"] not in {e["event_id"] for e in stack.events if e is not failed}
    # And nothing was loaded anywhere: the first run's rows and ledger row stand alone
    assert [normalise(r) for r in bq_rows(bq_client, dataset, "orders", "id")] == orders_source.rows()
    ledger = bq_client.query(
        f"SELECT run_id, dest_table, source_table FROM `{PROJECT}.{dataset}._etl_ledger`")
    assert [tuple(row.values()) for row in ledger.result()] == [
        ("etl-run-601", "orders", f"{orders_source.schema}.orders")]
    tables = {t.table_id for t in bq_client.list_tables(f"{bq_client.project}.{dataset}")}
    assert "orders_copy" not in tables
    assert stack.undelivered_requests() == 0
