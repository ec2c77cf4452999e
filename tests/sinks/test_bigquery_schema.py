"""Destination schema rules, row by row."""

from __future__ import annotations

import pyarrow as pa
import pytest
from google.cloud import bigquery

from worker import errors
from worker.columns import Column
from worker.sinks.bigquery_schema import (
    ExistingColumn,
    existing_columns,
    normalise_type,
    plan_schema,
    schema_fields,
)


def col(name: str, bq_type: str, repeated: bool = False) -> Column:
    return Column(name, "src", pa.string(), bq_type, repeated=repeated)


@pytest.mark.parametrize(
    ("reported", "normal"),
    [("INTEGER", "INT64"), ("FLOAT", "FLOAT64"), ("BOOLEAN", "BOOL"), ("bignumeric", "BIGNUMERIC"),
     ("JSON", "JSON"), ("STRING", "STRING")],
)
def test_legacy_type_names_are_normalised(reported: str, normal: str) -> None:
    assert normalise_type(reported) == normal


def test_existing_columns_read_type_and_mode() -> None:
    fields = [bigquery.SchemaField("a", "INTEGER"), bigquery.SchemaField("b", "STRING", mode="REPEATED")]
    assert existing_columns(fields) == [
        ExistingColumn("a", "INT64", False), ExistingColumn("b", "STRING", True),
    ]


@pytest.mark.parametrize(
    ("dest", "source", "dest_type"),
    [
        (ExistingColumn("x", "INT64", False), col("x", "INT64"), "INT64"),
        (ExistingColumn("X", "INT64", False), col("x", "INT64"), "INT64"),  # names are case-insensitive
        (ExistingColumn("x", "NUMERIC", False), col("x", "INT64"), "NUMERIC"),  # widened by CAST
        (ExistingColumn("x", "BIGNUMERIC", False), col("x", "NUMERIC"), "BIGNUMERIC"),
        (ExistingColumn("x", "JSON", False), col("x", "JSON"), "JSON"),
        (ExistingColumn("x", "STRING", True), col("x", "STRING", repeated=True), "STRING"),
    ],
)
def test_compatible_columns(dest: ExistingColumn, source: Column, dest_type: str) -> None:
    plan = plan_schema([dest], (source,))
    assert plan.new_columns == ()
    assert plan.dest_types == {source.name: dest_type}


@pytest.mark.parametrize(
    ("dest", "source", "message"),
    [
        (ExistingColumn("x", "INT64", False), col("x", "STRING"), "destination has INT64, source now gives"),
        (ExistingColumn("x", "INT64", False), col("x", "NUMERIC"), "has INT64, source now gives NUMERIC"),
        (ExistingColumn("x", "STRING", False), col("x", "JSON"), "has STRING, source now gives JSON"),
        (ExistingColumn("x", "INT64", False), col("x", "INT64", repeated=True), "gives ARRAY<INT64>"),
        (ExistingColumn("x", "INT64", True), col("x", "INT64"), "has ARRAY<INT64>, source now gives INT64"),
        (ExistingColumn("x", "FLOAT64", False), col("x", "INT64"), "has FLOAT64"),  # not exact: refused
    ],
)
def test_incompatible_columns_name_column_and_both_types(
    dest: ExistingColumn, source: Column, message: str
) -> None:
    with pytest.raises(errors.SchemaMismatchError, match="'x'") as caught:
        plan_schema([dest], (source,))
    assert message in str(caught.value)


def test_new_source_columns_are_planned_and_dropped_ones_ignored() -> None:
    existing = [ExistingColumn("id", "INT64", False), ExistingColumn("gone", "STRING", False)]
    plan = plan_schema(existing, (col("id", "INT64"), col("name", "STRING")))
    assert [c.name for c in plan.new_columns] == ["name"]
    assert plan.dest_types == {"id": "INT64", "name": "STRING"}


def test_schema_fields_for_destination_and_staging() -> None:
    columns = (col("j", "JSON"), col("t", "STRING", repeated=True))
    dest = [(f.name, f.field_type, f.mode) for f in schema_fields(columns, staging=False)]
    staging = [(f.name, f.field_type, f.mode) for f in schema_fields(columns, staging=True)]
    assert dest == [("j", "JSON", "NULLABLE"), ("t", "STRING", "REPEATED")]
    assert staging == [("j", "STRING", "NULLABLE"), ("t", "STRING", "REPEATED")]
