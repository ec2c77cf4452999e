"""Golden round trip from MariaDB 10.11 (MySQL dialect) through the worker into the BigQuery emulator.

One column per supported type (DECIMAL(65, 30) aside: it is BIGNUMERIC, which the emulator lacks; see
test_parquet.py). Rows: 1 minimum, 2 maximum, 3 zero and in-between values, 4 to 6 values BigQuery
cannot hold (zero dates under a permissive sql_mode, durations, non-boolean TINYINT(1), ...), 7 all
NULL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.sources import connection_of
from tests.types.conftest import RunWorker, load_request
from tests.types.golden import (
    NULL,
    NULLED,
    Col,
    Golden,
    Json,
    assert_fast_path_round_trip,
    assert_round_trip,
    line_forms,
)
from worker.sources import mysql_raw

BIG_DOC = (
    '{"b": [1, 2.50, {"c": "é🎉𝄞"}], "a": null, "big": 18446744073709551615, '
    '"neg": -9223372036854775808, "f": 1.7976931348623157e308}'
)
U64 = 18446744073709551615


def q(text: str) -> str:
    """A SQL string literal (MySQL also reads backslash escapes: doubled)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def ints(low: int, high: int) -> list[tuple[str, Any]]:
    return [(str(low), low), (str(high), high), ("0", 0), ("1", 1), ("2", 2), ("-0", 0), (NULL, None)]


GOLDEN = Golden("golden", [
    Col("b", "tinyint(1)", "BOOL", [
        ("0", False), ("1", True), ("0", False), ("1", True), ("2", NULLED), ("-1", NULLED), (NULL, None)]),
    Col("bo", "bool", "BOOL", [
        ("false", False), ("true", True), ("1", True), ("0", False), ("127", NULLED), ("0", False),
        (NULL, None)]),
    Col("ti", "tinyint", "INT64", ints(-128, 127)),
    Col("tiu", "tinyint unsigned", "INT64", ints(0, 255)),
    Col("si", "smallint", "INT64", ints(-32768, 32767)),
    Col("siu", "smallint unsigned", "INT64", ints(0, 65535)),
    Col("mi", "mediumint", "INT64", ints(-8388608, 8388607)),
    Col("miu", "mediumint unsigned", "INT64", ints(0, 16777215)),
    Col("i", "int", "INT64", ints(-2147483648, 2147483647)),
    Col("iu", "int unsigned", "INT64", ints(0, 4294967295)),
    Col("bi", "bigint", "INT64", ints(-9223372036854775808, 9223372036854775807)),
    Col("bu", "bigint unsigned", "NUMERIC", [
        ("0", Decimal(0)), (str(U64), Decimal(U64)), ("9223372036854775808", Decimal(2**63)),
        ("1", Decimal(1)), ("2", Decimal(2)), ("0", Decimal(0)), (NULL, None)]),
    Col("dc", "decimal(38, 9)", "NUMERIC", [
        ("-99999999999999999999999999999.999999999", Decimal("-99999999999999999999999999999.999999999")),
        ("99999999999999999999999999999.999999999", Decimal("99999999999999999999999999999.999999999")),
        ("0", Decimal(0)), ("-0.000000001", Decimal("-1E-9")), ("123.456", Decimal("123.456")),
        ("-0", Decimal(0)), (NULL, None)]),
    Col("d2", "decimal(10, 2)", "NUMERIC", [
        ("-99999999.99", Decimal("-99999999.99")), ("99999999.99", Decimal("99999999.99")),
        ("0", Decimal(0)), ("0.01", Decimal("0.01")), ("1.5", Decimal("1.5")), ("-0.01", Decimal("-0.01")),
        (NULL, None)]),
    Col("dx", "decimal(65, 0)", "STRING", [
        ("-" + "9" * 65, "-" + "9" * 65), ("9" * 65, "9" * 65), ("0", "0"), ("1", "1"),
        ("1" + "0" * 49, "1" + "0" * 49),
        ("-1", "-1"), (NULL, None)]),
    Col("f", "float", "FLOAT64", [
        ("-3.40282e38", -3.40282e38), ("3.40282e38", 3.40282e38), ("0", 0.0), ("1.1", 1.1), ("-1.5", -1.5),
        ("1.17549e-38", 1.17549e-38), (NULL, None)]),
    Col("d", "double", "FLOAT64", [
        ("-1.7976931348623157e308", -1.7976931348623157e308),
        ("1.7976931348623157e308", 1.7976931348623157e308),
        ("0", 0.0), ("0.1", 0.1), ("2.2250738585072014e-308", 2.2250738585072014e-308),
        ("-1.0000000000000002", -1.0000000000000002), (NULL, None)]),
    Col("bt1", "bit(1)", "INT64", [
        ("b'0'", 0), ("b'1'", 1), ("b'0'", 0), ("b'1'", 1), ("b'1'", 1), ("b'0'", 0), (NULL, None)]),
    Col("bt", "bit(8)", "INT64", [
        ("b'0'", 0), ("b'11111111'", 255), ("b'101'", 5), ("b'10000000'", 128), ("b'1'", 1), ("b'10'", 2),
        (NULL, None)]),
    Col("bt64", "bit(64)", "NUMERIC", [
        ("0", Decimal(0)), (str(U64), Decimal(U64)), ("b'101'", Decimal(5)),
        ("9223372036854775808", Decimal(2**63)),
        ("1", Decimal(1)), ("2", Decimal(2)), (NULL, None)]),
    Col("ch", "char(3)", "STRING", [
        ("''", ""), ("'abc'", "abc"), ("'a  '", "a"), ("'é'", "é"), (q("🎉"), "🎉"), ("' '", ""),
        (NULL, None)]),
    Col("vc", "varchar(20)", "STRING", [
        ("''", ""), (q("🎉" * 20), "🎉" * 20), ("' x '", " x "), ("'NULL'", "NULL"),
        (q("'quoted' \\ back"), "'quoted' \\ back"),
        ("'é'", "é"), (NULL, None)]),
    Col("tx", "text", "STRING", [
        ("''", ""), (q("héllo 🎉𝄞"), "héllo 🎉𝄞"), ("' '", " "), (q("line\nbreak\ttab"), "line\nbreak\ttab"),
        (q("𝄞" * 100), "𝄞" * 100), ("'0'", "0"), (NULL, None)]),
    Col("lt", "longtext", "STRING", [
        ("''", ""), ("'not json'", "not json"), ("'{}'", "{}"), ("'x'", "x"), ("'y'", "y"), ("'z'", "z"),
        (NULL, None)]),
    Col("bl", "blob", "BYTES", [
        ("''", b""), ("x'00ff10'", b"\x00\xff\x10"), ("x'00'", b"\x00"), ("'a'", b"a"),
        ("x'ffffffff'", b"\xff" * 4),
        ("x'0a'", b"\n"), (NULL, None)]),
    Col("bn", "binary(3)", "BYTES", [
        ("''", b"\x00\x00\x00"), ("'abc'", b"abc"), ("x'00'", b"\x00\x00\x00"), ("'a'", b"a\x00\x00"),
        ("x'ffffff'", b"\xff\xff\xff"), ("x'0102'", b"\x01\x02\x00"), (NULL, None)]),
    Col("vb", "varbinary(5)", "BYTES", [
        ("''", b""), ("x'0102030405'", b"\x01\x02\x03\x04\x05"), ("x'00'", b"\x00"), ("'a'", b"a"),
        ("x'ff'", b"\xff"), ("x'0000'", b"\x00\x00"), (NULL, None)]),
    Col("dt", "date", "DATE", [
        ("'1000-01-01'", date(1000, 1, 1)), ("'9999-12-31'", date(9999, 12, 31)),
        ("'2024-02-29'", date(2024, 2, 29)),
        ("'0001-01-01'", date(1, 1, 1)), ("'0000-00-00'", NULLED), ("'2024-00-10'", NULLED), (NULL, None)]),
    Col("dtm", "datetime(6)", "DATETIME", [
        ("'0001-01-01 00:00:00'", datetime(1, 1, 1)),
        ("'9999-12-31 23:59:59.999999'", datetime(9999, 12, 31, 23, 59, 59, 999999)),
        ("'2024-02-29 12:34:56.123456'", datetime(2024, 2, 29, 12, 34, 56, 123456)),
        ("'1970-01-01 00:00:00'", datetime(1970, 1, 1)), ("'0000-00-00 00:00:00'", NULLED),
        ("'2024-01-00 00:00:00'", NULLED), (NULL, None)]),
    Col("ts", "timestamp(6) NULL", "TIMESTAMP", [
        ("'1970-01-01 00:00:01'", datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)),
        ("'2038-01-19 03:14:07.999999'", datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)),
        ("'2024-02-29 12:34:56.000001'", datetime(2024, 2, 29, 12, 34, 56, 1, tzinfo=UTC)),
        ("'2000-01-01 00:00:00'", datetime(2000, 1, 1, tzinfo=UTC)), ("0", NULLED),
        ("'2024-02-29 00:00:00'", datetime(2024, 2, 29, tzinfo=UTC)), (NULL, None)]),
    Col("tm", "time(6)", "TIME", [
        ("'00:00:00'", time(0)), ("'23:59:59.999999'", time(23, 59, 59, 999999)),
        ("'12:00:00.000001'", time(12, 0, 0, 1)), ("'-00:00:01'", NULLED), ("'24:00:00'", NULLED),
        ("'838:59:59'", NULLED), (NULL, None)]),
    Col("yr", "year", "INT64", [
        ("1901", 1901), ("2155", 2155), ("0", 0), ("2024", 2024), ("1970", 1970), ("2000", 2000),
        (NULL, None)]),
    Col("js", "json", "JSON", [
        ("'[]'", Json("[]")), (q(BIG_DOC), Json(BIG_DOC)), ("'null'", Json("null")),
        ("'\"text\"'", Json('"text"')),
        (q('{"big": 12345678901234567890123}'), NULLED), ("'[1.10000000000000000001]'", NULLED),
        (NULL, None)]),
    Col("en", "enum('x', 'y', '🎉')", "STRING", [
        ("'x'", "x"), ("'y'", "y"), (q("🎉"), "🎉"), ("'nope'", ""), ("'x'", "x"), ("'y'", "y"),
        (NULL, None)]),
    Col("st", "set('a', 'b', 'c')", "STRING", [
        ("''", ""), ("'a,b,c'", "a,b,c"), ("'c,a'", "a,c"), ("'b'", "b"), ("'a,a'", "a"), ("'c'", "c"),
        (NULL, None)]),
])


@pytest.fixture
def golden_table(mysql_admin: sa.Engine, mysql_db: str) -> Iterator[dict[str, Any]]:
    """The golden table in a fresh database, written in a UTC session with a permissive sql_mode
    (zero dates allowed, invalid ENUM values stored as '')."""
    with mysql_admin.connect() as conn:
        conn.exec_driver_sql(f"USE `{mysql_db}`")
        conn.exec_driver_sql("SET time_zone = '+00:00', sql_mode = ''")
        conn.exec_driver_sql(GOLDEN.create_sql(GOLDEN.table, lambda name: f"`{name}`"))
        conn.exec_driver_sql(GOLDEN.insert_sql(GOLDEN.table, lambda name: f"`{name}`"))
    yield {
        "source_type": "mysql", "connection_params": connection_of(mysql_admin, database=mysql_db),
        "source_table_name": GOLDEN.table, "dest_table_name": "golden_my",
    }


@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_every_mysql_type_round_trips_value_by_value(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    load_type: str,
) -> None:
    # Given the golden table, when the worker loads it, then it completes, counting exactly the values
    # BigQuery cannot hold, every cell reads back as expected, and a redelivery changes nothing
    assert_round_trip(run_worker, golden_table | load_request(load_type), GOLDEN, bq_client, bq_dataset,
                      "golden_my")


# The columns the raw text-protocol reader carries (worker/sources/mysql_raw.py): not BIT (binary on
# the wire), TIME, or DECIMAL too wide for BIGNUMERIC (exact text); with any of them the whole table
# stays on the generic path, which the test above covers.
RAW_COLUMNS = [col.name for col in GOLDEN.columns if col.name not in {"bt1", "bt", "bt64", "tm", "dx"}]


@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_the_raw_fast_path_round_trips_the_same_values(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    load_type: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the golden table's columns that the raw reader can carry, when the worker loads them, then
    # the raw reader read them and BigQuery holds exactly what the generic path gives
    body = golden_table | load_request(load_type)
    assert_fast_path_round_trip(run_worker, body, GOLDEN, RAW_COLUMNS, mysql_raw, monkeypatch,
                                bq_client, bq_dataset, "golden_my")


# Without BLOB and BINARY (where 0xFF may occur) the raw reader reads one line per row.
LINE_COLUMNS = [name for name in RAW_COLUMNS if name not in {"bl", "bn", "vb"}]


def test_the_line_form_round_trips_the_same_values(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the golden table's columns the line form carries, when the worker loads them, then the
    # raw reader read them one line per row and BigQuery holds exactly the golden values
    forms = line_forms(monkeypatch)
    assert_fast_path_round_trip(run_worker, golden_table | load_request("catalog"), GOLDEN, LINE_COLUMNS,
                                mysql_raw, monkeypatch, bq_client, bq_dataset, "golden_my")
    assert forms == [True]
