"""Through the worker: `strict_types` refuses a value BigQuery cannot hold instead of loading NULL,
and a column type missing from the tables fails the run naming the column and the type."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.sources import connection_of
from tests.types.conftest import RunWorker
from worker.constants import LEDGER_TABLE
from worker.handlers.base import Outcome

# The tables hold a `point` / `geometry` column, which SQLAlchemy reflects with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:Did not recognize type")


def table_rows(client: bigquery.Client, dataset: str, table: str) -> int:
    query = f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}.{table}`"
    return int(next(iter(client.query(query, job_retry=None).result()))["n"])


def rows_of(client: bigquery.Client, dataset: str, table: str) -> list[dict[str, Any]]:
    query = f"SELECT * FROM `{PROJECT}.{dataset}.{table}` ORDER BY id"
    return [dict(row) for row in client.query(query, job_retry=None).result()]


def exists(client: bigquery.Client, dataset: str, table: str) -> bool:
    try:
        client.get_table(f"{PROJECT}.{dataset}.{table}")
    except gexc.NotFound:
        return False
    return True


@pytest.fixture
def pg_request(pg_admin: sa.Engine, pg_schema: str) -> dict[str, object]:
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
        conn.exec_driver_sql(
            "CREATE TABLE t (id int, d date, p point);"
            "INSERT INTO t VALUES (1, '2024-02-29', '(1,2)'), (2, 'infinity', NULL), (3, NULL, NULL)")
        conn.exec_driver_sql("SET search_path TO DEFAULT")
    return {"source_type": "postgresql", "connection_params": connection_of(pg_admin),
            "schema_name": pg_schema, "source_table_name": "t", "dest_table_name": "strict",
            "load_type": "catalog"}


def test_strict_types_fails_permanently_on_a_value_bigquery_cannot_hold_and_commits_nothing(
    run_worker: RunWorker, pg_request: dict[str, object], bq_client: bigquery.Client, bq_dataset: str
) -> None:
    run = run_worker(pg_request, selected_columns=["id", "d"], strict_types=True)
    assert run.outcome is Outcome.ACK  # permanent: reported, not retried
    error = run.failed.error
    assert (error.type, error.retryable) == ("SourceDataError", False)
    assert error.message == ("column 'd' (date): value 'infinity' cannot be held by BigQuery DATE; "
                             "strict_types refuses to load it as NULL")
    assert table_rows(bq_client, bq_dataset, "strict") == 0  # nothing committed: no row to compare
    assert table_rows(bq_client, bq_dataset, LEDGER_TABLE) == 0


def test_without_strict_types_the_same_value_is_loaded_as_null_and_counted(
    run_worker: RunWorker, pg_request: dict[str, object], bq_client: bigquery.Client, bq_dataset: str
) -> None:
    run = run_worker(pg_request, selected_columns=["id", "d"])
    assert run.completed.values_nulled == {"d": 1}
    # 'infinity' loaded as NULL (and counted); the source's own NULL stays NULL, uncounted
    assert rows_of(bq_client, bq_dataset, "strict") == [
        {"id": 1, "d": date(2024, 2, 29)}, {"id": 2, "d": None}, {"id": 3, "d": None}]


def test_a_type_missing_from_the_tables_fails_permanently_naming_column_and_type(
    run_worker: RunWorker, pg_request: dict[str, object], pg_schema: str, bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    run = run_worker(pg_request)  # every column, `p point` included
    assert run.outcome is Outcome.ACK
    error = run.failed.error
    assert (error.type, error.retryable) == ("UnsupportedTypeError", False)
    # the type as SQLAlchemy reflects it: it does not know `point`
    assert error.message == (f"column 'p' of {pg_schema}.t has type 'unrecognised type', which has no "
                             "BigQuery mapping")
    assert not exists(bq_client, bq_dataset, "strict")  # refused before anything was made


def test_a_mysql_type_missing_from_the_tables_is_named_too(
    run_worker: RunWorker, mysql_admin: sa.Engine, mysql_db: str, bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    with mysql_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE `{mysql_db}`.t (id int, g geometry)")
    connection = connection_of(mysql_admin, database=mysql_db)
    run = run_worker({"source_type": "mysql", "connection_params": connection, "source_table_name": "t",
                      "dest_table_name": "geo", "load_type": "catalog"})
    assert run.outcome is Outcome.ACK
    error = run.failed.error
    assert (error.type, error.retryable) == ("UnsupportedTypeError", False)
    assert error.message == "column 'g' of t has type 'unrecognised type', which has no BigQuery mapping"
    assert not exists(bq_client, bq_dataset, "geo")
