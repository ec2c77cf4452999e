"""Golden round trip from PostgreSQL 15 through the worker into the BigQuery emulator.

One column per supported type (BIGNUMERIC aside: the emulator has none, see test_parquet.py); rows:
1 minimum, 2 maximum, 3 zero and in-between values, 4 special values, 5 and 6 values BigQuery cannot
hold (or spelled differently), 7 all NULL.
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
)
from worker.sources import pg_copy

NAN, INF = float("nan"), float("inf")
BIG_DOC = (
    '{"b": [1, 2.50, {"c": "é🎉𝄞"}], "a": null, "big": 18446744073709551615, '
    '"neg": -9223372036854775808, "f": 1.7976931348623157e308, "tiny": 5e-324}'
)
UUID0, UUID1 = "00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"


def q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
       microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond)


def tsz(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return ts(year, month, day, hour, minute, second, microsecond).replace(tzinfo=UTC)


GOLDEN = Golden("golden", [
    Col("i2", "smallint", "INT64", [
        ("-32768", -32768), ("32767", 32767), ("0", 0), ("-1", -1), ("1", 1), ("2", 2), (NULL, None)]),
    Col("i4", "integer", "INT64", [
        ("-2147483648", -2147483648), ("2147483647", 2147483647), ("0", 0), ("-1", -1), ("1", 1),
        ("2", 2), (NULL, None)]),
    Col("i8", "bigint", "INT64", [
        ("-9223372036854775808", -9223372036854775808), ("9223372036854775807", 9223372036854775807),
        ("0", 0), ("-1", -1), ("1", 1), ("2", 2), (NULL, None)]),
    Col("n", "numeric(38, 9)", "NUMERIC", [
        ("-99999999999999999999999999999.999999999", Decimal("-99999999999999999999999999999.999999999")),
        ("99999999999999999999999999999.999999999", Decimal("99999999999999999999999999999.999999999")),
        ("0", Decimal(0)), ("-0.000000001", Decimal("-1E-9")), ("'NaN'", NULLED),
        ("123.456", Decimal("123.456")), (NULL, None)]),
    Col("n2", "numeric(10, 2)", "NUMERIC", [
        ("-99999999.99", Decimal("-99999999.99")), ("99999999.99", Decimal("99999999.99")),
        ("-0.00", Decimal(0)), ("0.01", Decimal("0.01")), ("1.5", Decimal("1.5")), ("'NaN'", NULLED),
        (NULL, None)]),
    Col("nu", "numeric", "STRING", [
        (q("-123456789012345678901234567890.123456789012345678901234567890"),
         "-123456789012345678901234567890.123456789012345678901234567890"),
        ("1e-30", "0.000000000000000000000000000001"), ("0", "0"), ("'NaN'", "NaN"),
        ("'Infinity'", "Infinity"), ("'-Infinity'", "-Infinity"), (NULL, None)]),
    Col("r", "real", "FLOAT64", [
        ("'-3.4028235e38'", -3.4028235e38), ("'3.4028235e38'", 3.4028235e38), ("'-0'", -0.0),
        ("'NaN'", NAN), ("'Infinity'", INF), ("'-Infinity'", -INF), (NULL, None)]),
    Col("d8", "double precision", "FLOAT64", [
        ("'-1.7976931348623157e308'", -1.7976931348623157e308),
        ("'1.7976931348623157e308'", 1.7976931348623157e308), ("'-0'", -0.0), ("'NaN'", NAN),
        ("'-Infinity'", -INF), ("'5e-324'", 5e-324), (NULL, None)]),
    Col("b", "boolean", "BOOL", [
        ("false", False), ("true", True), ("false", False), ("true", True), ("true", True),
        ("false", False), (NULL, None)]),
    Col("t", "text", "STRING", [
        ("''", ""), (q("héllo 🎉𝄞"), "héllo 🎉𝄞"), ("' '", " "),
        ("E'line\\nbreak\\ttab'", "line\nbreak\ttab"),
        (q("'quoted' \\ back"), "'quoted' \\ back"), ("'NULL'", "NULL"), (NULL, None)]),
    Col("vc", "varchar(10)", "STRING", [
        ("''", ""), (q("🎉" * 10), "🎉" * 10), ("'a'", "a"), ("' x '", " x "), ("'0123456789'", "0123456789"),
        ("'é'", "é"), (NULL, None)]),
    Col("ch", "char(3)", "STRING", [
        ("''", "   "), ("'abc'", "abc"), ("'a'", "a  "), ("'é'", "é  "), (q("🎉"), "🎉  "), ("' '", "   "),
        (NULL, None)]),
    Col("by", "bytea", "BYTES", [
        ("'\\x'", b""), ("'\\x00ff10'", b"\x00\xff\x10"), ("'\\x00'", b"\x00"), ("'\\x61'", b"a"),
        ("'\\xffffffff'", b"\xff" * 4), ("'\\x0a'", b"\n"), (NULL, None)]),
    Col("dt", "date", "DATE", [
        ("'0001-01-01'", date(1, 1, 1)), ("'9999-12-31'", date(9999, 12, 31)),
        ("'2024-02-29'", date(2024, 2, 29)), ("'1970-01-01'", date(1970, 1, 1)), ("'infinity'", NULLED),
        ("'0044-03-15 BC'", NULLED), (NULL, None)]),
    Col("tm", "time(6)", "TIME", [
        ("'00:00:00'", time(0)), ("'23:59:59.999999'", time(23, 59, 59, 999999)),
        ("'12:00:00.000001'", time(12, 0, 0, 1)), ("'00:00:00.5'", time(0, 0, 0, 500000)),
        ("'24:00:00'", NULLED), ("'01:02:03'", time(1, 2, 3)), (NULL, None)]),
    Col("ttz", "time(6) with time zone", "STRING", [
        ("'00:00:00+14'", "00:00:00+14"), ("'23:59:59.999999-12'", "23:59:59.999999-12"),
        ("'12:34:56.123456+05:30'", "12:34:56.123456+05:30"), ("'00:00:00+00'", "00:00:00+00"),
        ("'24:00:00+00'", "24:00:00+00"), ("'01:02:03-03:30'", "01:02:03-03:30"), (NULL, None)]),
    Col("ts", "timestamp(6)", "DATETIME", [
        ("'0001-01-01 00:00:00'", ts(1, 1, 1)),
        ("'9999-12-31 23:59:59.999999'", ts(9999, 12, 31, 23, 59, 59, 999999)),
        ("'2024-02-29 12:34:56.123456'", ts(2024, 2, 29, 12, 34, 56, 123456)),
        ("'1970-01-01'", ts(1970, 1, 1)),
        ("'-infinity'", NULLED), ("'10000-01-01 00:00:00'", NULLED), (NULL, None)]),
    Col("tsz", "timestamptz(6)", "TIMESTAMP", [
        ("'0001-01-01 00:00:00+00'", tsz(1, 1, 1)),
        ("'9999-12-31 23:59:59.999999+00'", tsz(9999, 12, 31, 23, 59, 59, 999999)),
        ("'2024-02-29 23:30:00.000001+05:30'", tsz(2024, 2, 29, 18, 0, 0, 1)),
        ("'2024-03-01 00:00:00-01'", tsz(2024, 3, 1, 1)), ("'infinity'", NULLED),
        ("'0001-01-01 00:00:00+00 BC'", NULLED), (NULL, None)]),
    Col("iv", "interval", "STRING", [
        ("'-178000000 years'", "-178000000 years"),
        ("'1 year 2 mons 3 days 04:05:06.789'", "1 year 2 mons 3 days 04:05:06.789"), ("'0'", "00:00:00"),
        ("'-1 day +02:00'", "-1 days +02:00:00"), ("'1.5 months'", "1 mon 15 days"), ("'P1Y'", "1 year"),
        (NULL, None)]),
    Col("js", "json", "JSON", [
        ("'[]'", Json("[]")), (q(BIG_DOC), Json(BIG_DOC)), ("'null'", Json("null")),
        ("'\"text\"'", Json('"text"')), (q('{"big": 12345678901234567890123}'), NULLED),
        ("'[1.10000000000000000001]'", NULLED), (NULL, None)]),
    Col("jb", "jsonb", "JSON", [
        ("'{}'", Json("{}")), (q(BIG_DOC), Json(BIG_DOC)), ("'0'", Json("0")),
        ("'[true, false, null]'", Json("[true,false,null]")), ("'1e400'", NULLED),
        (q('{"a": {"b": {"c": ["deep", "🎉"]}}}'), Json('{"a":{"b":{"c":["deep","🎉"]}}}')), (NULL, None)]),
    Col("u", "uuid", "STRING", [
        (q(UUID0), UUID0), ("'ffffffff-ffff-ffff-ffff-ffffffffffff'", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
        (q(UUID1), UUID1), (q(UUID1.upper()), UUID1), (q("{" + UUID1 + "}"), UUID1), (q(UUID1), UUID1),
        (NULL, None)]),
    Col("ip", "inet", "STRING", [
        ("'0.0.0.0'", "0.0.0.0"), ("'255.255.255.255'", "255.255.255.255"),
        ("'192.168.0.1/24'", "192.168.0.1/24"),
        ("'::1'", "::1"), ("'2001:db8::1'", "2001:db8::1"), ("'10.0.0.1/32'", "10.0.0.1"), (NULL, None)]),
    Col("cd", "cidr", "STRING", [
        ("'0.0.0.0/0'", "0.0.0.0/0"), ("'10.0.0.0/8'", "10.0.0.0/8"), ("'192.168.1.0/24'", "192.168.1.0/24"),
        ("'2001:db8::/32'", "2001:db8::/32"), ("'10.1.2.3/32'", "10.1.2.3/32"), ("'::/0'", "::/0"),
        (NULL, None)]),
    Col("mo", "mood", "STRING", [
        ("'sad'", "sad"), ("'happy'", "happy"), ("'ok'", "ok"), (q("😀"), "😀"), ("'ok'", "ok"),
        ("'sad'", "sad"), (NULL, None)]),
    Col("m", "money", "NUMERIC", [
        ("'-92233720368547758.08'", Decimal("-92233720368547758.08")),
        ("'92233720368547758.07'", Decimal("92233720368547758.07")), ("'0'", Decimal(0)),
        ("'-1.5'", Decimal("-1.5")), ("'$1,234.56'", Decimal("1234.56")), ("'0.01'", Decimal("0.01")),
        (NULL, None)]),
    Col("ai", "integer[]", "INT64", repeated=True, cells=[
        ("'{}'", []), ("'{-2147483648,0,2147483647}'", [-2147483648, 0, 2147483647]), ("'{1}'", [1]),
        ("'{1,NULL}'", NULLED), ("'{{1,2},{3,4}}'", NULLED), ("'{5,5}'", [5, 5]), (NULL, None)]),
    Col("at", "text[]", "STRING", repeated=True, cells=[
        ("'{}'", []), (q('{"","é🎉𝄞","a,b"}'), ["", "é🎉𝄞", "a,b"]), (q('{"NULL"}'), ["NULL"]),
        ("ARRAY['x', 'y']", ["x", "y"]), ("'{NULL}'", NULLED), ("'{\" \"}'", [" "]), (NULL, None)]),
    Col("an", "numeric(10, 2)[]", "NUMERIC", repeated=True, cells=[
        ("'{}'", []), ("'{1.5,-2.25}'", [Decimal("1.5"), Decimal("-2.25")]), ("'{0}'", [Decimal(0)]),
        ("'{99999999.99}'", [Decimal("99999999.99")]), ("'{NaN}'", NULLED), ("'{0.01}'", [Decimal("0.01")]),
        (NULL, None)]),
    Col("ad", "date[]", "DATE", repeated=True, cells=[
        ("'{}'", []), ("'{0001-01-01,9999-12-31}'", [date(1, 1, 1), date(9999, 12, 31)]),
        ("'{2024-02-29}'", [date(2024, 2, 29)]), ("'{1970-01-01}'", [date(1970, 1, 1)]),
        ("'{infinity}'", NULLED), ("'{2000-01-01,2000-01-01}'", [date(2000, 1, 1)] * 2), (NULL, None)]),
    Col("ajb", "jsonb[]", "JSON", repeated=True, cells=[
        ("'{}'", []),
        ("ARRAY['{\"a\": 1}'::jsonb, 'null', '\"é\"']", [Json('{"a":1}'), Json("null"), Json('"é"')]),
        ("ARRAY['[]'::jsonb]", [Json("[]")]),
        ("ARRAY['18446744073709551615'::jsonb]", [Json("18446744073709551615")]),
        ("ARRAY['1e400'::jsonb]", NULLED), ("ARRAY['{}'::jsonb]", [Json("{}")]), (NULL, None)]),
    Col("au", "uuid[]", "STRING", repeated=True, cells=[
        ("'{}'", []), (q("{" + UUID0 + "," + UUID1 + "}"), [UUID0, UUID1]), (q("{" + UUID1 + "}"), [UUID1]),
        ("'{}'", []), ("'{}'", []), ("'{}'", []), (NULL, None)]),
    Col("ae", "mood[]", "STRING", repeated=True, cells=[
        ("'{}'", []), ("'{sad,happy}'", ["sad", "happy"]), ("'{ok}'", ["ok"]), (q("{😀}"), ["😀"]),
        ("'{}'", []), ("'{sad,sad}'", ["sad", "sad"]), (NULL, None)]),
])


@pytest.fixture
def golden_table(pg_admin: sa.Engine, pg_schema: str) -> Iterator[dict[str, Any]]:
    """The golden table in a fresh schema; yields the request fields that read it."""
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
        conn.exec_driver_sql("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', '😀')")
        conn.exec_driver_sql(GOLDEN.create_sql(GOLDEN.table, lambda name: f'"{name}"'))
        conn.exec_driver_sql(GOLDEN.insert_sql(GOLDEN.table, lambda name: f'"{name}"'))
        conn.exec_driver_sql("SET search_path TO DEFAULT")
    yield {
        "source_type": "postgresql", "connection_params": connection_of(pg_admin),
        "schema_name": pg_schema, "source_table_name": GOLDEN.table, "dest_table_name": "golden_pg",
    }


@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_every_postgresql_type_round_trips_value_by_value(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    load_type: str,
) -> None:
    # Given the golden table, when the worker loads it, then it completes, counting exactly the values
    # BigQuery cannot hold, every cell reads back as expected, and a redelivery changes nothing
    assert_round_trip(run_worker, golden_table | load_request(load_type), GOLDEN, bq_client, bq_dataset,
                      "golden_pg")


# The columns PostgreSQL's COPY fast path carries (worker/sources/pg_copy.py): no arrays, no TIME.
COPY_COLUMNS = [col.name for col in GOLDEN.columns if not col.repeated and col.bq_type != "TIME"]


@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_the_copy_fast_path_round_trips_the_same_values(
    run_worker: RunWorker, golden_table: dict[str, Any], bq_client: bigquery.Client, bq_dataset: str,
    load_type: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the golden table's columns that COPY can carry, when the worker loads them, then
    # COPY read them and BigQuery holds exactly what the generic path gives
    body = golden_table | load_request(load_type)
    assert_fast_path_round_trip(run_worker, body, GOLDEN, COPY_COLUMNS, pg_copy, monkeypatch,
                                bq_client, bq_dataset, "golden_pg")
