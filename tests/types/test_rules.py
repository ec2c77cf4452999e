"""The rules behind the golden tables, one by one, as tables: converters, the batch builder's NULL
counting and strict mode, the ledger's encoding of the counts and warnings, schema plans."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from tests.sources import connection_of, make_request, read_rows
from worker import errors
from worker.columns import Column
from worker.ledger import LedgerEntry
from worker.sinks import bigquery_sql as sql
from worker.sinks.bigquery_schema import ExistingColumn, plan_schema
from worker.sources import converters as cv
from worker.sources import mysql as mysql_source
from worker.sources import sqlite as sqlite_source
from worker.sources.arrays import NulledValues, column_array
from worker.sources.postgresql import PostgresDialect
from worker.sources.sqlalchemy_source import SqlAlchemySource

INT = Column("n", "integer", pa.int64(), "INT64")


@pytest.mark.parametrize(
    ("number", "fits"),
    [
        (0, True), (2**63 - 1, True), (-(2**63), True), (2**64 - 1, True),  # INT64 and UINT64
        (2**64, False), (-(2**63) - 1, False), (10**400, False),
        (Decimal("2.50"), True), (Decimal("0.1"), True), (Decimal("-0.0"), True),  # shortest text equal
        (Decimal("1.7976931348623157E+308"), True), (Decimal("5E-324"), True), (Decimal("1E+23"), True),
        (Decimal("1.10000000000000000001"), False), (Decimal("1E+400"), False), (Decimal("1E-400"), False),
        (Decimal("9007199254740993.0"), False),  # 2**53 + 1 is no FLOAT64
    ],
)
def test_bigquery_json_numbers(number: int | Decimal, fits: bool) -> None:
    assert cv.bigquery_json_number(number) is fits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", "null"),  # a JSON null stays JSON, not SQL NULL
        ('{"b": [1, 2.50], "a": {"é": "🎉"}}', '{"b":[1,2.50],"a":{"é":"🎉"}}'),
        (b'{"x": 18446744073709551615}', '{"x":18446744073709551615}'),
        ('{"a": 1, "a": 2}', '{"a":2}'),  # the last duplicate key, as PostgreSQL's jsonb keeps
        ('{"deep": [[[{"n": 12345678901234567890123}]]]}', None),
        ("[1e400]", None), ("not json", None), ("", None), (1, None),
    ],
)
def test_json_text(text: Any, expected: str | None) -> None:
    assert cv.json_text(text) == expected


@pytest.mark.parametrize(("value", "expected"), [(0, False), (1, True), (2, None), (-1, None), ("1", None)])
def test_bool_from_int_takes_only_0_and_1(value: Any, expected: bool | None) -> None:
    assert cv.bool_from_int(value) is expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2], [1, 2]), ([], []), ((3,), [3]),
        ([1, None], None), ([[1], [2]], None), ([cv.Unrepresentable("infinity")], None),
        ("{1,2}", None),  # an array the driver did not parse: never split a string into characters
    ],
)
def test_list_converter(values: Any, expected: list[Any] | None) -> None:
    assert cv.list_converter(None, values) == expected


def test_list_converter_nulls_the_array_when_an_element_cannot_be_held() -> None:
    assert cv.list_converter(cv.finite_decimal, [Decimal(1), Decimal("NaN")]) is None
    assert cv.list_converter(cv.finite_decimal, [Decimal(1)]) == [Decimal(1)]


@pytest.mark.parametrize(("value", "expected"), [("1e-7", "0.0000001"), ("abc", None), (b"1", None)])
def test_decimal_text_of_what_sqlite_stored(value: Any, expected: str | None) -> None:
    assert cv.decimal_text(value) == expected


# --- the batch builder -----------------------------------------------------------------------------
def test_column_array_nulls_and_counts_what_bigquery_cannot_hold() -> None:
    nulled = NulledValues()
    # A driver marker, a converter's None and a value with no Arrow form all become counted NULLs
    values = [1, None, cv.Unrepresentable("x"), "text", 2]
    array = column_array(values, INT, None, nulled)
    assert array.to_pylist() == [1, None, None, None, 2]
    assert nulled.counts == {"n": 2}
    converted = column_array([1, 5], INT, lambda v: v if v < 3 else None, nulled)
    assert converted.to_pylist() == [1, None] and nulled.counts == {"n": 3}


def test_column_array_in_strict_mode_names_column_type_and_value_but_not_text() -> None:
    expected = r"column 'n' \(integer\): value 'infinity' cannot be held by BigQuery INT64"
    with pytest.raises(errors.SourceDataError, match=expected):
        column_array([cv.Unrepresentable("infinity")], INT, None, NulledValues(strict=True))
    with pytest.raises(errors.SourceDataError) as raised:
        column_array(["secret@example.com"], INT, None, NulledValues(strict=True))
    assert "secret" not in str(raised.value) and "a str value" in str(raised.value)
    assert not errors.SourceDataError.retryable


# --- dialect converters ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("convert", "value", "expected"),
    [
        (mysql_source.date_from_text, "0000-00-00", None),
        (mysql_source.date_from_text, "2024-00-10", None),
        (mysql_source.date_from_text, "0001-01-01", date(1, 1, 1)),
        (mysql_source.naive_from_text, "0000-00-00 00:00:00.000000", None),
        (mysql_source.naive_from_text, "9999-12-31 23:59:59.9", datetime(9999, 12, 31, 23, 59, 59, 900000)),
        (mysql_source.utc_from_text, "2038-01-19 03:14:07", datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)),
        (sqlite_source.float_value, 3, 3.0),
        (sqlite_source.float_value, 2**63 - 1, None),  # no FLOAT64 holds it
        (sqlite_source.float_value, "1.5", None),
        (sqlite_source.decimal_value, 0.1, Decimal("0.1")),  # a REAL's shortest text
        (sqlite_source.decimal_value, "1234567890123456789.1", Decimal("1234567890123456789.1")),
        (sqlite_source.decimal_value, float("inf"), None),
        (sqlite_source.decimal_value, b"1", None),
    ],
)
def test_dialect_converters(convert: Any, value: Any, expected: Any) -> None:
    assert convert(value) == expected


def test_sqlite_storage_classes_must_match_the_declared_type() -> None:
    assert sqlite_source.of_class(int, 5) == 5
    assert sqlite_source.of_class(int, 5.0) is None
    assert sqlite_source.of_class(bytes, "text") is None


class _TokyoSessions(PostgresDialect):
    """A server whose sessions start in Asia/Tokyo (+09:00), as its TimeZone setting would make them."""

    def engine_options(self) -> dict[str, Any]:
        options = super().engine_options()
        return {**options, "connect_args": {**options["connect_args"], "options": "-c TimeZone=Asia/Tokyo"}}


def test_postgresql_timestamptz_extremes_survive_whatever_the_session_time_zone(
    pg_admin: sa.Engine, pg_schema: str
) -> None:
    # In +09:00 PostgreSQL would write the greatest instant as year 10000, and year 1 with an LMT
    # offset in seconds: the snapshot reads in UTC instead.
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE "{pg_schema}".z AS SELECT timestamptz \'9999-12-31 23:59:59.999999+00\' AS a, '
            "timestamptz '0001-01-01 00:00:00+00' AS b")
    request = make_request("postgresql", connection_of(pg_admin), "z", schema_name=pg_schema)
    with SqlAlchemySource(_TokyoSessions()).snapshot(request) as snap:
        assert read_rows(snap) == [{
            "a": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "b": datetime(1, 1, 1, tzinfo=UTC)}]
        assert snap.values_nulled == {}


# --- the ledger keeps counts and warnings ---------------------------------------------------------
def _entry(**changes: Any) -> LedgerEntry:
    base = LedgerEntry(
        run_id="r", data_source_id=1, etl_run_id=None, dest_table="t", load_type="catalog",
        window_column=None, window_low=None, window_high=None, rows_extracted=1, rows_loaded=1,
        batches_loaded=1, source_row_count=1, attempt=1, completed_seq=3, staging_token="tok",
        started_at=datetime(2024, 1, 1, tzinfo=UTC), committed_at=datetime(2024, 1, 1, tzinfo=UTC),
        duration_seconds=1.0,
    )
    return dataclasses.replace(base, **changes)


def test_ledger_stores_counts_and_warnings_as_json_text_and_reads_them_back() -> None:
    entry = _entry(values_nulled={"d": 2, "é": 1}, warnings=("column 'b' ... 'quoted'",))
    params = {p.name: p for p in sql.ledger_params(entry)}
    assert (params["values_nulled"].type_, params["values_nulled"].value) == ("STRING", '{"d":2,"é":1}')
    assert params["warnings"].value == '["column \'b\' ... \'quoted\'"]'
    assert sql.entry_from_row({name: p.value for name, p in params.items()}) == entry


def test_ledger_rows_without_counts_read_as_none_counted() -> None:
    row = {p.name: p.value for p in sql.ledger_params(_entry())} | {"values_nulled": None, "warnings": None}
    assert sql.entry_from_row(row) == _entry()


# --- schema plans and the commit's SELECT ----------------------------------------------------------
def test_plan_lists_destination_columns_the_source_no_longer_sends() -> None:
    existing = [ExistingColumn("id", "INT64", False), ExistingColumn("Gone", "STRING", False)]
    plan = plan_schema(existing, (Column("id", "int", pa.int64(), "INT64"),))
    assert plan.missing == ("Gone",)
    assert plan.warnings("orders") == (
        "column 'Gone' of orders is no longer in the source columns: it is kept, and the rows of this run "
        "have NULL in it",)


def test_the_commit_parses_json_arrays_element_by_element_and_casts_widened_arrays() -> None:
    docs = Column("docs", "jsonb[]", pa.list_(pa.string()), "JSON", repeated=True)
    nums = Column("nums", "int[]", pa.list_(pa.int64()), "INT64", repeated=True)
    assert sql.select_expr(docs, "JSON") == (
        "ARRAY(SELECT PARSE_JSON(item) FROM UNNEST(`docs`) AS item WITH OFFSET AS pos ORDER BY pos)")
    assert sql.select_expr(nums, "NUMERIC") == "CAST(`nums` AS ARRAY<NUMERIC>)"


def test_types_doc_lists_the_values_that_do_not_survive() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "types.md").read_text(encoding="utf-8")
    section = text.split("## Values that do not survive", 1)[1]
    for title in ("Every source", "PostgreSQL", "MySQL / MariaDB", "SQLite"):
        assert f"### {title}" in section
    for needle in ("`infinity`", "`24:00:00`", "zero dates", "`NaN`", "1.10000000000000000001"):
        assert needle in section
