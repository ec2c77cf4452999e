"""schemas/ is generated from the models; Django codes against it, so drift fails the build."""

from __future__ import annotations

import json

import jsonschema
import pytest

from devstack.schemas import SCHEMA_DIR, expected_files
from worker.messages import SCHEMA_MODELS


def test_schema_files_match_the_models() -> None:
    stale = [p.name for p, text in expected_files().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `make schemas`: {stale} differ from the models"
    extra = {p.name for p in SCHEMA_DIR.glob("*.json")} - {p.name for p in expected_files()}
    assert not extra, f"schemas without a model: {extra}"


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_each_schema_is_a_valid_json_schema(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_a_django_style_request_validates_against_the_request_schema() -> None:
    schema = json.loads((SCHEMA_DIR / "etl-run-requested.json").read_text())
    request = {
        "schema_version": 1, "data_source_id": 123, "etl_run_id": 456, "source_type": "postgresql",
        "connection_params": {"host": "db", "port": 5432, "database": "mydb", "username": "u",
                              "password": "p"},
        "schema_name": "public", "source_table_name": "transactions",
        "dest_table_name": "bq_transactions", "load_type": "transactional",
        "timestamp_column": "created_at", "selected_columns": ["id", "amount", "created_at"],
        "last_sync_value": "2024-01-01T00:00:00", "historical_start_date": "2023-01-01",
    }
    jsonschema.validate(request, schema)
