"""The job form of a request: several tables of one data source under `tables`, each with the
one-table fields; the one-table form is a job of one; never both; at most what one BigQuery
transaction can modify. The worker and the JSON Schema Django validates with agree."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from devstack.schemas import SCHEMA_DIR
from worker.constants import MAX_JOB_TABLES
from worker.errors import ConfigurationError, MessageDecodeError
from worker.messages import TableSpec, decode_request

SCHEMA = json.loads((SCHEMA_DIR / "etl-run-requested.json").read_text())
ORDERS = {"source_table_name": "orders", "dest_table_name": "orders", "load_type": "transactional",
          "timestamp_column": "created_at", "last_sync_value": "2024-05-01T00:00:00.000000+00:00"}
CUSTOMERS = {"source_table_name": "customers", "dest_table_name": "customers", "load_type": "merge",
             "timestamp_column": "updated_at", "primary_key": ["id"]}


def body(**fields: Any) -> dict[str, Any]:
    return {"data_source_id": 1, "etl_run_id": 5, "source_type": "postgresql", "schema_name": "shop",
            "connection_params": {"host": "h", "database": "d", "password_env": "ETL_SECRET_SHOP"},
            **fields}


def decoded(fields: dict[str, Any]) -> Any:
    return decode_request(json.dumps(fields).encode())


def refusal(fields: dict[str, Any], by_schema: bool = True) -> str:
    """The worker's reason for refusing `fields`; `by_schema`: Django's validation refuses them too
    (rules across fields, like a mode's needs, are the worker's alone, as for one table)."""
    with pytest.raises(MessageDecodeError) as caught:
        decoded(fields)
    assert isinstance(caught.value, ConfigurationError) and not caught.value.retryable
    if by_schema:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(fields, SCHEMA)
    return str(caught.value)


def test_a_job_decodes_into_its_tables_in_order() -> None:
    fields = body(tables=[ORDERS, CUSTOMERS])
    jsonschema.validate(fields, SCHEMA)
    request = decoded(fields)
    assert [spec.dest_table_name for spec in request.table_specs()] == ["orders", "customers"]
    assert request.table_specs()[1].primary_key == ["id"]
    assert (request.dest_table_name, request.load_type) == (None, None)
    assert request.describe_tables() == "shop.orders → orders, shop.customers → customers"


def test_the_one_table_form_is_a_job_of_one_table() -> None:
    request = decoded(body(**ORDERS, quality_rules=[{"rule": "min_rows", "value": 1}]))
    (spec,) = request.table_specs()
    assert spec == TableSpec.model_validate({**ORDERS, "quality_rules": [{"rule": "min_rows", "value": 1}]})


def test_table_fields_left_at_their_defaults_at_the_top_of_a_job_are_accepted() -> None:
    fields = body(tables=[ORDERS], timestamp_column=None, reconcile_deletes=False, quality_rules=[])
    jsonschema.validate(fields, SCHEMA)
    assert len(decoded(fields).table_specs()) == 1


@pytest.mark.parametrize(("fields", "fragment", "by_schema"), [
    (body(tables=[ORDERS], **ORDERS), "not at the top level: source_table_name, dest_table_name", True),
    (body(tables=[ORDERS], selected_columns=["id"]), "not at the top level: selected_columns", True),
    (body(), "give source_table_name, dest_table_name, load_type (one table), or tables (a job)", True),
    (body(tables=[]), "a job names 1 to 98 tables, not 0", True),
    (body(tables=[{**ORDERS, "surprise": 1}]), "tables.0.surprise", True),
    (body(tables=[ORDERS, {**CUSTOMERS, "dest_table_name": "orders"}]), "repeated: orders", False),
    (body(tables=[ORDERS, {**CUSTOMERS, "timestamp_column": None}]),
     "tables.1: Value error, merge loads need timestamp_column", False),
    (body(tables=[{**ORDERS, "selected_columns": ["id"]}]),
     "tables.0: Value error, selected_columns must include timestamp_column 'created_at'", False),
])
def test_a_bad_job_is_refused_permanently_saying_why(fields: dict[str, Any], fragment: str,
                                                     by_schema: bool) -> None:
    assert fragment in refusal(fields, by_schema)


def test_a_job_larger_than_one_bigquery_transaction_is_refused_before_anything_runs() -> None:
    tables = [{**ORDERS, "dest_table_name": f"t{i}"} for i in range(MAX_JOB_TABLES + 1)]
    message = refusal(body(tables=tables))
    assert "a job names 1 to 98 tables, not 99" in message
    assert "modifies at most 100 tables, two of them the ledger and the heads table" in message
    assert len(decoded(body(tables=tables[:MAX_JOB_TABLES])).table_specs()) == MAX_JOB_TABLES
