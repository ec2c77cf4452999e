"""Golden round-trip tables: one column per source type, one row per edge case, and the value
BigQuery must hold for every cell, compared value by value after a run through the worker.

A table is written column by column, so that each type's edge values and their expected BigQuery
values sit side by side. Every column has one cell per row; row ids are 1, 2, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from google.cloud import bigquery

from tests.conftest import PROJECT
from worker.sinks.bigquery_schema import normalise_type
from worker.sources import mysql_raw
from worker.sources.converters import loads_exact


class _Nulled:
    """Expected: NULL in BigQuery, counted in run.completed's values_nulled."""

    def __repr__(self) -> str:
        return "NULLED"


NULLED: Any = _Nulled()
NULL = "NULL"  # the source literal


@dataclass(frozen=True)
class Json:
    """An expected JSON value, compared as JSON (numbers by value, keys in any order)."""

    text: str


@dataclass(frozen=True)
class Col:
    name: str
    ddl: str  # the source type as written in CREATE TABLE
    bq_type: str  # the destination column's expected BigQuery type
    cells: Sequence[tuple[str, Any]]  # per row: (source SQL literal, expected BigQuery value)
    repeated: bool = False


@dataclass(frozen=True)
class Golden:
    table: str
    columns: Sequence[Col]

    def subset(self, names: Sequence[str]) -> Golden:
        """The same rows, with only these columns."""
        return Golden(self.table, [col for col in self.columns if col.name in names])

    @property
    def row_count(self) -> int:
        counts = {len(col.cells) for col in self.columns}
        assert len(counts) == 1, f"every column needs the same number of cells: {counts}"
        return counts.pop()

    def create_sql(self, qualified: str, quote: Callable[[str], str]) -> str:
        columns = ", ".join(f"{quote(col.name)} {col.ddl}" for col in self.columns)
        return f"CREATE TABLE {qualified} ({quote('id')} integer PRIMARY KEY, {columns})"

    def insert_sql(self, qualified: str, quote: Callable[[str], str]) -> str:
        names = ", ".join(quote(name) for name in ["id", *(col.name for col in self.columns)])
        rows = (
            "(" + ", ".join([str(row + 1), *(col.cells[row][0] for col in self.columns)]) + ")"
            for row in range(self.row_count)
        )
        return f"INSERT INTO {qualified} ({names}) VALUES " + ", ".join(rows)

    def expected_rows(self) -> list[dict[str, Any]]:
        return [
            {"id": row + 1, **{col.name: _expected(col, col.cells[row][1]) for col in self.columns}}
            for row in range(self.row_count)
        ]

    def expected_nulled(self) -> dict[str, int]:
        counts = {col.name: sum(cell[1] is NULLED for cell in col.cells) for col in self.columns}
        return {name: count for name, count in counts.items() if count}

    def expected_schema(self) -> list[tuple[str, str, str]]:
        return [("id", "INT64", "NULLABLE")] + [
            (col.name, col.bq_type, "REPEATED" if col.repeated else "NULLABLE") for col in self.columns
        ]


def _expected(col: Col, value: Any) -> Any:
    if value is NULLED:
        value = None
    # BigQuery stores a NULL array as an empty one.
    return [] if col.repeated and value is None else value


# --- reading back --------------------------------------------------------------------------------
def _select_expr(col: Col) -> str:
    name = f"`{col.name}`"
    if col.bq_type != "JSON":
        return name
    if col.repeated:  # the JSON text of each element, in order
        return f"ARRAY(SELECT TO_JSON_STRING(x) FROM UNNEST({name}) AS x WITH OFFSET AS o ORDER BY o)"
    return f"TO_JSON_STRING({name})"  # a JSON null stays 'null'; SQL NULL stays None


def read_back(client: bigquery.Client, dataset: str, table: str, golden: Golden) -> list[dict[str, Any]]:
    exprs = ", ".join(["id", *(f"{_select_expr(col)} AS `{col.name}`" for col in golden.columns)])
    query = f"SELECT {exprs} FROM `{PROJECT}.{dataset}.{table}` ORDER BY id"
    return [dict(row) for row in client.query(query, job_retry=None).result()]


def dest_schema(client: bigquery.Client, dataset: str, table: str) -> list[tuple[str, str, str]]:
    fields = client.get_table(f"{PROJECT}.{dataset}.{table}").schema
    return [(field.name, normalise_type(field.field_type), field.mode) for field in fields]


# --- comparing -----------------------------------------------------------------------------------
def same(expected: Any, got: Any) -> bool:
    """Value equality as BigQuery means it: NaN equals NaN, -0.0 differs from 0.0, JSON by value."""
    if isinstance(expected, Json):
        return isinstance(got, str) and loads_exact(got) == loads_exact(expected.text)
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same, expected, got))
    if isinstance(expected, float):
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        same_sign = math.copysign(1, got) == math.copysign(1, expected)
        return isinstance(got, float) and got == expected and same_sign
    if isinstance(expected, Decimal):
        return isinstance(got, Decimal) and got == expected
    return type(got) is type(expected) and bool(got == expected)


def mismatches(expected_rows: list[dict[str, Any]], got_rows: list[dict[str, Any]]) -> list[str]:
    """Every cell that differs, as 'row id, column: expected ... got ...'."""
    if [row["id"] for row in got_rows] != [row["id"] for row in expected_rows]:
        return [f"row ids differ: {[row['id'] for row in got_rows]}"]
    return [
        f"row {want['id']}, {name}: expected {value!r}, got {have[name]!r}"
        for want, have in zip(expected_rows, got_rows, strict=True)
        for name, value in want.items()
        if not same(value, have[name])
    ]


def assert_loaded_exactly(
    run: Any, golden: Golden, client: bigquery.Client, dataset: str, table: str
) -> None:
    """The run completed, counted exactly the values BigQuery cannot hold, and every cell reads back
    as the expected BigQuery value in a column of the expected type."""
    from worker.handlers.base import Outcome  # late: keep this module light for pure unit tests

    assert run.outcome is Outcome.ACK, run.events[-1]
    assert run.completed.values_nulled == golden.expected_nulled()
    assert dest_schema(client, dataset, table) == golden.expected_schema()
    assert mismatches(golden.expected_rows(), read_back(client, dataset, table, golden)) == []


def assert_round_trip(
    run_worker: Callable[..., Any], body: dict[str, Any], golden: Golden, client: bigquery.Client,
    dataset: str, table: str,
) -> None:
    """The worker loads `body`'s golden table exactly (assert_loaded_exactly), with no warning, and
    delivering the same request again publishes the very same run.completed, from the ledger."""
    run = run_worker(body)
    assert_loaded_exactly(run, golden, client, dataset, table)
    assert run.completed.warnings == []
    again = run_worker(body, etl_run_id=run.completed.etl_run_id)
    assert again.events == [run.completed]


def assert_fast_path_round_trip(
    run_worker: Callable[..., Any], body: dict[str, Any], golden: Golden, columns: Sequence[str],
    reader: Any, patch: Any, client: bigquery.Client, dataset: str, table: str,
) -> None:
    """With only `columns` selected, the dialect's fast `reader` module (pg_copy, mysql_raw) takes the
    table, and BigQuery holds exactly the golden values (what the generic path gives)."""
    spy = _FastPathSpy(reader.fast_batches)
    patch.setattr(reader, "fast_batches", spy)
    run = run_worker(body, selected_columns=["id", *columns])
    assert spy.used == [True]
    assert_loaded_exactly(run, golden.subset(columns), client, dataset, table)


@dataclass
class _FastPathSpy:
    """Stands in for a fast reader's `fast_batches`: records, per read, whether it took the table
    (True) or left it to the generic path."""

    fast_batches: Callable[[Any], Any]
    used: list[bool] = field(default_factory=list)

    def __call__(self, read: Any) -> Any:
        batches = self.fast_batches(read)
        self.used.append(batches is not None)
        return batches


def line_forms(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per MySQL raw read, whether it read one line per row (`mysql_raw.lines_allowed`)."""
    forms: list[bool] = []
    real = mysql_raw.lines_allowed

    def noted(read: Any) -> bool:
        forms.append(real(read))
        return forms[-1]

    monkeypatch.setattr(mysql_raw, "lines_allowed", noted)
    return forms
