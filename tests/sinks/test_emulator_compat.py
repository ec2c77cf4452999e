"""The emulator workarounds: parameters written as literals, split ALTERs, JSON reported as STRING."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from google.cloud import bigquery

from worker.columns import Column
from worker.sinks import emulator_compat as compat
from worker.sinks.bigquery_schema import ExistingColumn

P = bigquery.ScalarQueryParameter


@pytest.mark.parametrize(
    ("bq_type", "value", "literal"),
    [
        ("STRING", "it's", r"'it\'s'"),
        ("STRING", "a\\b\nc\td", r"'a\\b\nc\td'"),
        ("STRING", "x'; DROP TABLE t; --", r"'x\'; DROP TABLE t; --'"),
        ("STRING", "日本", "'日本'"),
        ("INT64", -9223372036854775808, "-9223372036854775808"),
        ("INT64", None, "CAST(NULL AS INT64)"),
        ("FLOAT64", 4.5, "4.5"),
        ("FLOAT64", float("inf"), "CAST('inf' AS FLOAT64)"),
        ("BOOL", True, "TRUE"),
        ("TIMESTAMP", datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
         "TIMESTAMP '2024-01-02 03:04:05.000006+00:00'"),
        ("TIMESTAMP", datetime(2024, 1, 2, 3, 4, 5), "TIMESTAMP '2024-01-02 03:04:05+00:00'"),
    ],
)
def test_sql_literals(bq_type: str, value: object, literal: str) -> None:
    assert compat.sql_literal(bq_type, value) == literal


@pytest.mark.parametrize(
    ("bq_type", "value"), [("INT64", "1"), ("INT64", True), ("STRING", 1), ("DATE", "x")]
)
def test_values_of_the_wrong_type_are_refused(bq_type: str, value: object) -> None:
    with pytest.raises(ValueError):
        compat.sql_literal(bq_type, value)


def test_parameters_are_inlined_in_one_pass() -> None:
    params = [P("run_id", "STRING", "@run_id_x"), P("run_id_x", "INT64", 3)]
    text = compat.inline_parameters("WHERE a = @run_id AND b = @run_id_x AND c = @@row_count", params)
    assert text == "WHERE a = '@run_id_x' AND b = 3 AND c = @@row_count"


def test_missing_parameter_is_an_error() -> None:
    with pytest.raises(ValueError, match="@nope"):
        compat.inline_parameters("SELECT @nope", [])


def test_script_query_keeps_parameters_on_real_bigquery() -> None:
    params = [P("run_id", "STRING", "r")]
    assert compat.script_query("SELECT @run_id", params, emulator=False) == ("SELECT @run_id", params)
    assert compat.script_query("SELECT @run_id", params, emulator=True) == ("SELECT 'r'", [])


def test_alter_is_one_statement_on_bigquery_and_split_on_the_emulator() -> None:
    columns = [Column("a", "s", pa.string(), "STRING"), Column("b", "s", pa.int64(), "INT64")]
    assert len(compat.alter_statements("`p`.`d`.`t`", columns, emulator=False)) == 1
    assert compat.alter_statements("`p`.`d`.`t`", columns, emulator=True) == [
        "ALTER TABLE `p`.`d`.`t` ADD COLUMN IF NOT EXISTS `a` STRING",
        "ALTER TABLE `p`.`d`.`t` ADD COLUMN IF NOT EXISTS `b` INT64",
    ]


def test_string_reported_for_a_json_source_column_is_taken_as_json() -> None:
    columns = [Column("doc", "jsonb", pa.string(), "JSON"), Column("name", "text", pa.string(), "STRING")]
    existing = [ExistingColumn("DOC", "STRING", False), ExistingColumn("name", "STRING", False)]
    assert compat.reported_columns(existing, columns) == [
        ExistingColumn("DOC", "JSON", False), ExistingColumn("name", "STRING", False),
    ]


def test_default_api_retry_is_bounded_only_on_the_emulator() -> None:
    assert compat.default_api_retry(False) is bigquery.DEFAULT_RETRY
    assert compat.default_api_retry(True).timeout == 30.0


def test_load_output_rows_are_per_job_on_bigquery_and_cumulative_on_the_emulator() -> None:
    assert compat.load_output_rows(7, staged_before=5, emulator=False) == 7
    assert compat.load_output_rows(7, staged_before=5, emulator=True) == 2
