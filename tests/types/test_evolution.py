"""Schema evolution through the worker against the BigQuery emulator: the source table changes
between two runs (a column added, widened, dropped, or changed incompatibly)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.sources import connection_of
from tests.types.conftest import RunWorker
from tests.types.golden import dest_schema
from worker.constants import LEDGER_TABLE
from worker.handlers.base import Outcome


@dataclass(frozen=True)
class Source:
    """A source database for one test: run SQL in it, and the request fields that read table `t`."""

    execute: Callable[[str], None]
    request: dict[str, Any]


@pytest.fixture
def postgres(pg_admin: sa.Engine, pg_schema: str) -> Source:
    def execute(sql: str) -> None:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
            conn.exec_driver_sql(sql)
            conn.exec_driver_sql("SET search_path TO DEFAULT")

    return Source(execute, {"source_type": "postgresql", "connection_params": connection_of(pg_admin),
                            "schema_name": pg_schema})


@pytest.fixture
def mysql(mysql_admin: sa.Engine, mysql_db: str) -> Source:
    def execute(sql: str) -> None:
        with mysql_admin.connect() as conn:
            conn.exec_driver_sql(f"USE `{mysql_db}`")
            for statement in filter(str.strip, sql.split(";")):
                conn.exec_driver_sql(statement)

    return Source(execute, {"source_type": "mysql",
                            "connection_params": connection_of(mysql_admin, database=mysql_db)})


@pytest.fixture(params=["postgresql", "mysql"])
def source(request: pytest.FixtureRequest) -> Iterator[Source]:
    yield request.getfixturevalue("postgres" if request.param == "postgresql" else "mysql")


def transactional(source: Source) -> dict[str, Any]:
    return source.request | {"source_table_name": "t", "dest_table_name": "evolving",
                             "load_type": "transactional", "timestamp_column": "id"}


@pytest.fixture
def rows(bq_client: bigquery.Client, bq_dataset: str) -> Callable[[str], list[dict[str, Any]]]:
    def read(columns: str) -> list[dict[str, Any]]:
        query = f"SELECT {columns} FROM `{PROJECT}.{bq_dataset}.evolving` ORDER BY id"
        return [dict(row) for row in bq_client.query(query, job_retry=None).result()]

    return read


def test_a_new_source_column_is_added_nullable_and_earlier_rows_read_null(
    run_worker: RunWorker, postgres: Source, rows: Any, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a first run of t(id, a)
    postgres.execute("CREATE TABLE t (id int, a text); INSERT INTO t VALUES (1, 'x')")
    assert run_worker(transactional(postgres)).outcome is Outcome.ACK
    # When the source gains columns and the next run loads new rows
    postgres.execute("ALTER TABLE t ADD COLUMN b numeric(10, 2), ADD COLUMN c jsonb;"
                     "INSERT INTO t VALUES (2, 'y', 1.5, '{\"k\": 1}')")
    run = run_worker(transactional(postgres))
    # Then the destination has them (nullable), earlier rows read NULL, the new row its values
    assert run.outcome is Outcome.ACK and run.completed.warnings == []
    assert dest_schema(bq_client, bq_dataset, "evolving") == [
        ("id", "INT64", "NULLABLE"), ("a", "STRING", "NULLABLE"), ("b", "NUMERIC", "NULLABLE"),
        ("c", "JSON", "NULLABLE")]
    assert rows("id, a, b, TO_JSON_STRING(c) AS c") == [
        {"id": 1, "a": "x", "b": None, "c": None}, {"id": 2, "a": "y", "b": Decimal("1.5"), "c": '{"k":1}'}]


WIDENINGS = {
    "postgresql": (
        "CREATE TABLE t (id int, n int, v varchar(10), f real, d numeric(10, 2));"
        "INSERT INTO t VALUES (1, 7, 'short', 1.5, 12.34)",
        "ALTER TABLE t ALTER COLUMN n TYPE bigint, ALTER COLUMN v TYPE varchar(200),"
        " ALTER COLUMN f TYPE double precision, ALTER COLUMN d TYPE numeric(24, 6);"
        "INSERT INTO t VALUES (2, 1099511627776, repeat('é', 150), 1e300, 123456789012345678.123456)",
    ),
    "mysql": (
        "CREATE TABLE t (id int, n int, v varchar(10), f float, d decimal(10, 2));"
        "INSERT INTO t VALUES (1, 7, 'short', 1.5, 12.34)",
        "ALTER TABLE t MODIFY n bigint, MODIFY v varchar(200), MODIFY f double, MODIFY d decimal(24, 6);"
        "INSERT INTO t VALUES (2, 1099511627776, repeat('é', 150), 1e300, 123456789012345678.123456)",
    ),
}


def test_widened_source_types_keep_loading_into_the_same_columns(
    run_worker: RunWorker, source: Source, rows: Any, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a first run of INT, VARCHAR(10), FLOAT and DECIMAL(10, 2) columns
    before, widen = WIDENINGS[source.request["source_type"]]
    source.execute(before)
    assert run_worker(transactional(source)).outcome is Outcome.ACK
    schema = dest_schema(bq_client, bq_dataset, "evolving")
    # When they become BIGINT, VARCHAR(200), DOUBLE and DECIMAL(24, 6) and hold wider values
    source.execute(widen)
    run = run_worker(transactional(source))
    # Then the run loads them into the unchanged destination, every value exact, the first run's
    # row as it was
    assert run.outcome is Outcome.ACK, run.events[-1]
    assert (run.completed.values_nulled, run.completed.warnings) == ({}, [])
    assert dest_schema(bq_client, bq_dataset, "evolving") == schema
    assert [c for _, c, _ in schema] == ["INT64", "INT64", "STRING", "FLOAT64", "NUMERIC"]
    assert rows("id, n, v, f, d") == [
        {"id": 1, "n": 7, "v": "short", "f": 1.5, "d": Decimal("12.34")},
        {"id": 2, "n": 1099511627776, "v": "é" * 150, "f": 1e300, "d": Decimal("123456789012345678.123456")},
    ]


def test_a_dropped_source_column_stays_null_for_new_rows_with_a_warning(
    run_worker: RunWorker, postgres: Source, rows: Any, bq_client: bigquery.Client, bq_dataset: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a first run of t(id, a, b)
    postgres.execute("CREATE TABLE t (id int, a text, b int); INSERT INTO t VALUES (1, 'x', 10)")
    assert run_worker(transactional(postgres)).outcome is Outcome.ACK
    # When b is dropped at the source and a new row arrives
    postgres.execute("ALTER TABLE t DROP COLUMN b; INSERT INTO t VALUES (2, 'y')")
    with caplog.at_level(logging.WARNING):
        run = run_worker(transactional(postgres))
    # Then the destination keeps b, the earlier row its value, the new row NULL
    assert run.outcome is Outcome.ACK
    assert [name for name, _, _ in dest_schema(bq_client, bq_dataset, "evolving")] == ["id", "a", "b"]
    assert rows("id, a, b") == [{"id": 1, "a": "x", "b": 10}, {"id": 2, "a": "y", "b": None}]
    # And the completion event and the log both say so
    expected = ("column 'b' of evolving is no longer in the source columns: it is kept, and the rows "
                "of this run have NULL in it")
    assert run.completed.warnings == [expected]
    assert expected in caplog.messages
    # And a redelivery reports the same warning, from the ledger
    again = run_worker(transactional(postgres), etl_run_id=run.completed.etl_run_id)
    assert again.events == [run.completed]


@dataclass(frozen=True)
class Change:
    dialect: str
    before: str
    after: str
    message: str  # what run.failed must say: the column, its old and its new type
    committed: Any  # the first run's value of c, as BigQuery holds it


INCOMPATIBLE = [
    Change("postgresql", "CREATE TABLE t (id int, c text); INSERT INTO t VALUES (1, '7')",
           "ALTER TABLE t ALTER COLUMN c TYPE integer USING c::integer",
           "column 'c': destination has STRING, source now gives INT64 (source type integer)", "7"),
    Change("postgresql", "CREATE TABLE t (id int, c numeric(20, 2)); INSERT INTO t VALUES (1, 1.5)",
           "ALTER TABLE t ALTER COLUMN c TYPE numeric(40, 2)",
           "column 'c': destination has NUMERIC, source now gives BIGNUMERIC (source type numeric(40, 2))",
           Decimal("1.5")),
    Change("postgresql", "CREATE TABLE t (id int, c int); INSERT INTO t VALUES (1, 1)",
           "ALTER TABLE t ALTER COLUMN c TYPE int[] USING ARRAY[c]",
           "column 'c': destination has INT64, source now gives ARRAY<INT64> (source type integer[])", 1),
    Change("mysql", "CREATE TABLE t (id int, c int); INSERT INTO t VALUES (1, 1)",
           "ALTER TABLE t MODIFY c bigint unsigned",
           "column 'c': destination has INT64, source now gives NUMERIC (source type bigint(20) unsigned)",
           1),
    Change("mysql", "CREATE TABLE t (id int, c double); INSERT INTO t VALUES (1, 1.5)",
           "ALTER TABLE t MODIFY c decimal(10, 2)",
           "column 'c': destination has FLOAT64, source now gives NUMERIC (source type decimal(10, 2))",
           1.5),
]


@pytest.mark.parametrize("change", INCOMPATIBLE, ids=lambda change: change.message.split("gives ")[1])
def test_an_incompatible_change_fails_permanently_naming_column_and_types_and_commits_nothing(
    run_worker: RunWorker, request: pytest.FixtureRequest, bq_client: bigquery.Client, bq_dataset: str,
    change: Change, rows: Any,
) -> None:
    source: Source = request.getfixturevalue("postgres" if change.dialect == "postgresql" else "mysql")
    # Given a committed first run
    source.execute(change.before)
    first = run_worker(transactional(source))
    assert first.outcome is Outcome.ACK
    schema = dest_schema(bq_client, bq_dataset, "evolving")
    # When the column's type changes into one its BigQuery column cannot take, and a row arrives
    source.execute(change.after)
    source.execute("INSERT INTO t VALUES (2, NULL)")
    run = run_worker(transactional(source))
    # Then the run fails for good (acked), with a typed error naming the column and both types
    assert run.outcome is Outcome.ACK
    error = run.failed.error
    assert (error.type, error.retryable) == ("SchemaMismatchError", False)
    assert change.message in error.message
    # And nothing was committed: the destination and the ledger hold the first run only, as it was
    assert rows("id, c") == [{"id": 1, "c": change.committed}]
    assert dest_schema(bq_client, bq_dataset, "evolving") == schema
    ledger = f"SELECT run_id FROM `{PROJECT}.{bq_dataset}.{LEDGER_TABLE}`"
    assert [row["run_id"] for row in bq_client.query(ledger, job_retry=None).result()] == [
        first.completed.run_id]
