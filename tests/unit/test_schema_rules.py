"""The request schema says what the worker refuses, so a publisher that validates against
`schemas/etl-run-requested.json` first never sends a request the worker will refuse for these rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from worker.errors import MessageDecodeError
from worker.messages import decode_request

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA = json.loads((SCHEMA_DIR / "etl-run-requested.json").read_text())


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "data_source_id": 1, "source_type": "postgresql", "source_table_name": "t", "dest_table_name": "d",
        "load_type": "catalog",
        "connection_params": {"host": "h", "database": "db", "password_env": "ETL_SECRET_X"},
    }
    values.update(overrides)
    return values


def schema_accepts(value: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True


def worker_accepts(value: dict[str, Any]) -> bool:
    try:
        decode_request(json.dumps(value).encode())
    except MessageDecodeError:
        return False
    return True


REFUSED = {
    "transactional without its cursor": body(load_type="transactional"),
    "merge without its cursor": body(load_type="merge", primary_key=["id"]),
    "a server without a host": body(connection_params={"database": "db"}),
    "merge fields on catalog": body(primary_key=["id"]),
    "reconcile on transactional": body(load_type="transactional", timestamp_column="ts",
                                       reconcile_deletes=True),
    "two passwords": body(connection_params={"host": "h", "database": "db", "password": "x",
                                             "password_env": "ETL_SECRET_X"}),
    "a repeated column": body(selected_columns=["a", "a"]),
    "a reserved destination": body(dest_table_name="_etl_ledger"),
    "a destination BigQuery refuses": body(dest_table_name="a-b"),
    "a control character": body(source_table_name="a\x00b"),
    "a 129-character identifier": body(source_table_name="x" * 129),
    "an unknown field": body(surprise=1),
    "a cdc field on merge": body(load_type="merge", timestamp_column="ts", cdc_server_id=5),
    "a resnapshot on catalog": body(cdc_resnapshot=True),
    "server_id 0": body(source_type="mysql", load_type="cdc", cdc_server_id=0),
    "server_id past 32 bits": body(source_type="mysql", load_type="cdc", cdc_server_id=2**32),
}
ACCEPTED = {
    "catalog": body(),
    "sqlite without a host": body(source_type="sqlite", connection_params={"database": "/tmp/x.db"}),
    "merge with its fields": body(load_type="merge", timestamp_column="ts", primary_key=["id"],
                                  soft_delete_column="gone", reconcile_deletes=True),
    "reconcile false on catalog": body(reconcile_deletes=False),
    "mysql cdc with its fields": body(source_type="mysql", load_type="cdc", primary_key=["id"],
                                      cdc_server_id=4_000_000_000, cdc_resnapshot=True),
    "awkward identifiers": body(source_table_name="Order Lines-ä", selected_columns=["Unit Price", "größe"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_schema_refuses_what_the_worker_refuses(case: str) -> None:
    assert not worker_accepts(REFUSED[case])
    assert not schema_accepts(REFUSED[case])


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_schema_accepts_what_the_worker_accepts(case: str) -> None:
    assert worker_accepts(ACCEPTED[case])
    assert schema_accepts(ACCEPTED[case])


def test_event_schemas_admit_fields_a_newer_worker_adds() -> None:
    for path in SCHEMA_DIR.glob("run.*.json"):
        assert '"additionalProperties": false' not in path.read_text(), path.name
