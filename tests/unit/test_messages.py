"""Request decoding: every bad body is one typed, permanent error; secrets stay secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import MessageDecodeError
from worker.messages import decode_request


def valid(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "data_source_id": 1, "source_type": "postgresql",
        "connection_params": {"host": "h", "port": 5432, "database": "d", "username": "u",
                              "password": "hunter22"},
        "source_table_name": "t", "dest_table_name": "d", "load_type": "catalog",
    }
    body.update(overrides)
    return body


def test_a_valid_request_decodes() -> None:
    request = decode_request(json.dumps(valid(last_sync_value=1700000000)).encode())
    assert request.source_table_name == "t" and request.schema_version == 1
    assert request.last_sync_value == "1700000000"  # integer cursors arrive as numbers
    assert "hunter22" not in repr(request) and "hunter22" not in str(request)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "invalid"),
        (b"[]", "invalid"),
        (json.dumps(valid(source_type="oracle")).encode(), "source_type"),
        (json.dumps(valid(load_type="transactional")).encode(), "timestamp_column"),
        (json.dumps(valid(dest_table_name="a-b")).encode(), "dest_table_name"),
        (json.dumps(valid(dest_table_name="_etl_ledger")).encode(), "reserved"),
        (json.dumps(valid(source_table_name="")).encode(), "source_table_name"),
        (json.dumps(valid(source_table_name="a\x00b")).encode(), "control"),
        (json.dumps(valid(selected_columns=["a", "a"])).encode(), "repeat"),
        (json.dumps(valid(surprise=1)).encode(), "surprise"),
        (json.dumps(valid(schema_version=2)).encode(), "schema_version"),
        (json.dumps(valid(connection_params={"database": "d"})).encode(), "host"),
        (json.dumps(valid(connection_params={"host": "h", "port": 70000, "database": "d"})).encode(),
         "port"),
        (json.dumps(valid(load_type="transactional", timestamp_column="ts", selected_columns=["a"]))
         .encode(), "timestamp_column"),
        (json.dumps(valid(load_type="merge")).encode(), "merge loads need timestamp_column"),
        (json.dumps(valid(primary_key=["id"])).encode(), "primary_key only applies to merge and cdc"),
        (json.dumps(valid(reconcile_deletes=True, soft_delete_column="gone")).encode(),
         "soft_delete_column, reconcile_deletes only apply to merge"),
        (json.dumps(valid(load_type="merge", timestamp_column="ts", primary_key=["id", "id"])).encode(),
         "repeat"),
        (json.dumps(valid(load_type="merge", timestamp_column="ts", primary_key=[])).encode(), "primary_key"),
        (json.dumps(valid(load_type="merge", timestamp_column="ts", primary_key=["id"],
                          soft_delete_column="gone", selected_columns=["ts"])).encode(),
         "selected_columns must include primary_key 'id', soft_delete_column 'gone'"),
    ],
)
def test_bad_requests_raise_one_permanent_typed_error(body: bytes, fragment: str) -> None:
    with pytest.raises(MessageDecodeError) as caught:
        decode_request(body)
    assert fragment in str(caught.value)
    assert caught.value.retryable is False
    assert caught.value.raw == body
    assert "hunter22" not in str(caught.value)


def test_a_merge_request_decodes_with_its_keys_and_delete_rules() -> None:
    request = decode_request(json.dumps(valid(
        load_type="merge", timestamp_column="updated_at", primary_key=["Order ID", "line"],
        soft_delete_column="deleted_at", reconcile_deletes=True,
        column_names={"Order ID": "order_id"})).encode())
    assert (request.primary_key, request.soft_delete_column, request.reconcile_deletes) == (
        ["Order ID", "line"], "deleted_at", True)
    assert request.column_names == {"Order ID": "order_id"}


@pytest.mark.parametrize(
    "body",
    [
        valid(data_source_id=True),
        valid(data_source_id="7"),
        valid(connection_params={"host": "h", "port": True, "database": "d"}),
        valid(etl_run_id=1.5),
    ],
)
def test_numbers_must_be_numbers(body: dict[str, Any]) -> None:
    with pytest.raises(MessageDecodeError):
        decode_request(json.dumps(body).encode())
