"""What the reference app may depend on, and what its requests may carry (no services needed)."""

from __future__ import annotations

import ast

import jsonschema
import pytest
from etl.contract import InvalidRequest, load_schema
from etl.models import DataSource, Job, Run
from etl.request_builder import build_request, scheduler_body

from tests.django_ref.conftest import REFERENCE

# The worker's own packages, and this repository's test/dev code: a user's Django has none of them.
FORBIDDEN = {"worker", "devstack", "tests", "bench"}


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def test_the_reference_app_never_imports_the_worker() -> None:
    files = sorted(REFERENCE.rglob("*.py"))
    assert len(files) > 10
    offenders = {str(path.relative_to(REFERENCE)): sorted(bad)
                 for path in files
                 if (bad := {m for m in imported_modules(path.read_text()) if m.split(".")[0] in FORBIDDEN})}
    assert offenders == {}


def test_the_import_scan_sees_every_form() -> None:
    source = ("import worker.app\nfrom worker import messages\nfrom .x import y\n"
              "importlib.import_module('worker.cli')\n__import__('devstack')\n")
    assert imported_modules(source) == {"worker.app", "worker", "worker.cli", "devstack"}


def job(**fields: object) -> Job:
    source = DataSource(pk=3, name="shop", source_type="postgresql", host="10.0.0.5", port=5432,
                        database="shop", username="etl", password_kind="password_secret",
                        password_ref="projects/p/secrets/shop-db")
    values: dict[str, object] = {"pk": 5, "data_source": source, "source_schema": "public",
                                 "source_table": "orders", "dest_table": "bq_orders", "load_type": "catalog"}
    return Job(**{**values, **fields})


@pytest.mark.parametrize("fields", [
    {"load_type": "catalog", "selected_columns": ["id", "amount"]},
    {"load_type": "transactional", "timestamp_column": "created_at", "historical_start_date": "2023-01-01",
     "last_sync_value": "2024-01-01T00:00:00.000000+00:00"},
    {"load_type": "merge", "timestamp_column": "updated_at", "primary_key": ["id"],
     "soft_delete_column": "deleted_at", "reconcile_deletes": True},
])
def test_requests_are_valid_against_the_schema_and_carry_only_a_password_reference(
    fields: dict[str, object],
) -> None:
    item = job(**fields)
    body = build_request(item, Run(pk=11))
    jsonschema.validate(body, load_schema("etl-run-requested"))
    assert body["etl_run_id"] == 11 and body["context"]["job_id"] == 5 and body["context"]["run_id"] == 11
    assert body["connection_params"] == {"host": "10.0.0.5", "port": 5432, "database": "shop",
                                         "username": "etl", "password_secret": "projects/p/secrets/shop-db"}
    assert ("last_sync_value" in body) == (item.load_type == "transactional")
    static = scheduler_body(item)
    assert "etl_run_id" not in static and "last_sync_value" not in static
    assert "run_id" not in static["context"]


def test_the_data_source_has_no_place_for_a_plaintext_password() -> None:
    assert "password" not in {f.name for f in DataSource._meta.fields}


@pytest.mark.parametrize(("fields", "problem"), [
    ({"load_type": "transactional"}, "'timestamp_column' is a required property"),
    ({"dest_table": "_etl_ledger"}, "dest_table_name"),
    ({"dest_table": "bad-name"}, "dest_table_name"),
    ({"load_type": "catalog", "primary_key": ["id"]}, r"False schema does not allow \['id'\]"),
    ({"selected_columns": ["id", "id"]}, "has non-unique elements"),
    ({"load_type": "merge", "timestamp_column": "updated_at", "selected_columns": ["updated_at", "x"],
      "primary_key": ["id"]}, "must include id"),
    ({"source_table": "x" * 129}, "source_table_name: .x{129}. is not valid"),
    ({"load_type": "bulk"}, "load_type"),
])
def test_what_the_worker_would_refuse_is_refused_before_publishing(fields: dict[str, object],
                                                                   problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        build_request(job(**fields), Run(pk=11))
