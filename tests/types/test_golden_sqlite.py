"""Golden round trip from SQLite through the worker into the BigQuery emulator (lighter than the
server databases: SQLite's interest is its dynamic typing, where any column may hold any value)."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from tests.types.conftest import RunWorker, load_request
from tests.types.golden import (
    NULL,
    NULLED,
    Col,
    Golden,
    Json,
    assert_loaded_exactly,
)

BIG_DOC = '{"b": [1, 2.50, {"c": "é🎉𝄞"}], "a": null, "big": 18446744073709551615}'

GOLDEN = Golden("golden", [
    Col("i", "INTEGER", "INT64", [
        ("-9223372036854775808", -9223372036854775808), ("9223372036854775807", 9223372036854775807),
        ("0", 0), ("'abc'", NULLED), ("1.5", NULLED), ("x'00'", NULLED), (NULL, None)]),
    Col("r", "REAL", "FLOAT64", [
        ("-1.7976931348623157e308", -1.7976931348623157e308),
        ("1.7976931348623157e308", 1.7976931348623157e308),
        ("9e999", float("inf")), ("'x'", NULLED), ("0.1", 0.1), ("3", 3.0), (NULL, None)]),
    Col("t", "TEXT", "STRING", [
        ("''", ""), ("'héllo 🎉𝄞'", "héllo 🎉𝄞"), ("'NULL'", "NULL"), ("12", "12"), ("x'00ff'", NULLED),
        ("' '", " "), (NULL, None)]),
    Col("b", "BLOB", "BYTES", [
        ("x''", b""), ("x'00ff'", b"\x00\xff"), ("x'0a'", b"\n"), ("'text'", NULLED), ("1", NULLED),
        ("x'ffffffff'", b"\xff" * 4), (NULL, None)]),
    Col("n", "NUMERIC(10, 2)", "NUMERIC", [
        ("-99999999.99", Decimal("-99999999.99")), ("99999999.99", Decimal("99999999.99")), ("0", Decimal(0)),
        ("'abc'", NULLED), ("1e30", NULLED), ("0.1", Decimal("0.1")), (NULL, None)]),
    Col("nu", "NUMERIC", "STRING", [
        ("0.0000001", "0.0000001"), ("123", "123"), ("0", "0"), ("'abc'", NULLED), ("-1.5", "-1.5"),
        ("x'00'", NULLED), (NULL, None)]),
    Col("ok", "BOOLEAN", "BOOL", [
        ("0", False), ("1", True), ("1", True), ("2", NULLED), ("'true'", NULLED), ("0", False),
        (NULL, None)]),
    Col("d", "DATE", "DATE", [
        ("'0001-01-01'", date(1, 1, 1)), ("'9999-12-31'", date(9999, 12, 31)),
        ("'2024-02-29'", date(2024, 2, 29)),
        ("'not a date'", NULLED), ("17", NULLED), ("'2024-02-30'", NULLED), (NULL, None)]),
    Col("dt", "DATETIME", "DATETIME", [
        ("'0001-01-01 00:00:00'", datetime(1, 1, 1)),
        ("'9999-12-31 23:59:59.999999'", datetime(9999, 12, 31, 23, 59, 59, 999999)),
        ("'2024-02-29T12:34:56.123456+02:00'", datetime(2024, 2, 29, 10, 34, 56, 123456)),
        ("2460000.5", NULLED), ("'yesterday'", NULLED), ("'2024-01-02'", datetime(2024, 1, 2)),
        (NULL, None)]),
    Col("tm", "TIME", "TIME", [
        ("'00:00:00'", time(0)), ("'23:59:59.999999'", time(23, 59, 59, 999999)), ("'12:00'", time(12)),
        ("'noon'", NULLED), ("43200", NULLED), ("'01:02:03.5'", time(1, 2, 3, 500000)), (NULL, None)]),
    Col("js", "JSON", "JSON", [
        ("'[]'", Json("[]")), (f"'{BIG_DOC}'", Json(BIG_DOC)), ("'null'", Json("null")),
        ("'not json'", NULLED),
        ("1", Json("1")), ("'{\"big\": 12345678901234567890123}'", NULLED), (NULL, None)]),
])


@pytest.fixture
def golden_table(sqlite_path: Path) -> dict[str, Any]:
    db = sqlite3.connect(sqlite_path)
    try:
        db.execute(GOLDEN.create_sql(GOLDEN.table, lambda name: f'"{name}"'))
        db.execute(GOLDEN.insert_sql(GOLDEN.table, lambda name: f'"{name}"'))
        db.commit()
    finally:
        db.close()
    return {
        "source_type": "sqlite", "connection_params": {"database": str(sqlite_path)},
        "source_table_name": GOLDEN.table, "dest_table_name": "golden_lite",
    }


@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_every_sqlite_type_round_trips_value_by_value(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    load_type: str,
) -> None:
    # Given values of every storage class in columns of every declared type, when the worker loads them
    run = run_worker(golden_table | load_request(load_type))
    # Then a value that does not fit its column's declared type is NULL and counted, the rest exact
    assert_loaded_exactly(run, GOLDEN, bq_client, bq_dataset, "golden_lite")
