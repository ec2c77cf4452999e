"""Job-id paths that bqemulator cannot show (it never answers 409 and rewrites load job ids), run
against a small fake client that behaves as real BigQuery documents; its failures are BigQuery's
documented errors as the client library raises them (tests/sinks/bigquery_errors.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from tests.sinks.bigquery_errors import (
    BACKEND_ERROR,
    PROJECT_QUOTA,
    RATE_LIMITS,
    SERIALIZE,
    TRANSACTION_ABORTED,
    api_error,
    job_error,
)
from worker import errors
from worker.columns import Column
from worker.ledger import LedgerEntry
from worker.retry import RetryPolicy
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging
from worker.sinks.bigquery_sql import VERIFICATION_MARKER

COLUMNS = (Column("id", "integer", pa.int64(), "INT64"),)
RUN = "run-1"


class FakeJob:
    def __init__(self, job_id: str, *, output_rows: int = 0, rows: tuple[dict[str, Any], ...] = (),
                 error: gexc.GoogleAPICallError | None = None) -> None:
        self.job_id = job_id
        self.output_rows = output_rows
        self._rows = rows
        self._error = error
        # a failed job's errorResult: what the client raised its error from
        self.error_result = (error.errors or [{"reason": "backendError"}])[0] if error else None
        self.waits = 0

    def result(self, **_: Any) -> Iterator[dict[str, Any]]:
        self.waits += 1
        if self._error is not None:
            raise self._error
        return iter(self._rows)


class FakeClient:
    """Jobs are created by the outcome queue: a FakeJob is inserted (and returned); an exception is
    raised, after inserting the job when `created_anyway` (the response was lost, not the request)."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.inserted: list[str] = []
        self.fetched: list[str] = []
        self.outcomes: list[FakeJob | Exception] = []
        self.created_anyway: FakeJob | None = None
        self.ledger_rows: tuple[dict[str, Any], ...] = ()

    def create_dataset(self, dataset: Any, **_: Any) -> Any:
        return dataset

    def create_table(self, table: Any, **_: Any) -> Any:
        return table

    def get_table(self, table_id: str, **_: Any) -> Any:
        raise gexc.NotFound(f"table {table_id}")

    def delete_table(self, table_id: str, **_: Any) -> None:
        return None

    def load_table_from_file(self, file: Any, destination: str, *, job_id: str, **_: Any) -> FakeJob:
        return self._insert(job_id)

    def query(self, query: str, *, job_id: str | None = None, **_: Any) -> FakeJob:
        if job_id is None:  # a ledger lookup
            return FakeJob("lookup", rows=self.ledger_rows)
        return self._insert(job_id)

    def get_job(self, job_id: str, **_: Any) -> FakeJob:
        self.fetched.append(job_id)
        return self.jobs[job_id]

    def _insert(self, job_id: str) -> FakeJob:
        self.inserted.append(job_id)
        if job_id in self.jobs:
            raise gexc.Conflict(f"Already Exists: Job {job_id}")
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            if self.created_anyway is not None:
                self.jobs[job_id], self.created_anyway = self.created_anyway, None
            raise outcome
        self.jobs[job_id] = outcome
        return outcome


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def staging(client: FakeClient) -> BigQueryStaging:
    sink = BigQuerySink(
        cast(bigquery.Client, client), project="p", dataset="d",
        retry=RetryPolicy(max_tries=3, first_delay_s=0), api_retry=bigquery.DEFAULT_RETRY,
    )
    return sink.open_staging("orders", COLUMNS, RUN, 2, "catalog")


def part(tmp_path: Path) -> Path:
    path = tmp_path / "part.parquet"
    path.write_bytes(b"PAR1")
    return path


def test_a_retried_load_whose_job_exists_waits_on_that_job(
    client: FakeClient, staging: BigQueryStaging, tmp_path: Path
) -> None:
    # Given the first insert created the job but its response was lost
    client.created_anyway = FakeJob("x", output_rows=42)
    client.outcomes = [gexc.ServiceUnavailable("connection reset")]
    # When the part is loaded
    rows = staging.load_part(part(tmp_path))
    # Then the retry met the same job id (409) and waited on the existing job: one load, not two
    job_id = f"etl_{RUN}_a2_{staging.token}_p0"
    assert client.inserted == [job_id, job_id]
    assert client.fetched == [job_id]
    assert rows == 42 and staging.rows_loaded == 42


def test_parts_get_their_own_job_ids(client: FakeClient, staging: BigQueryStaging, tmp_path: Path) -> None:
    client.outcomes = [FakeJob("a", output_rows=1), FakeJob("b", output_rows=2)]
    assert staging.load_part(part(tmp_path)) + staging.load_part(part(tmp_path)) == 3
    assert client.inserted == [f"etl_{RUN}_a2_{staging.token}_p0", f"etl_{RUN}_a2_{staging.token}_p1"]


def test_a_failed_load_job_is_resubmitted_under_a_new_id(
    client: FakeClient, staging: BigQueryStaging, tmp_path: Path
) -> None:
    # Given the first job ran and failed with a transient backend error
    failed = FakeJob("a", error=job_error("backendError", BACKEND_ERROR))
    client.outcomes = [failed, FakeJob("b", output_rows=5)]
    # When the part is loaded, the retry cannot reuse the failed job's id
    assert staging.load_part(part(tmp_path)) == 5
    base = f"etl_{RUN}_a2_{staging.token}_p0"
    assert client.inserted == [base, f"{base}_r1"]


def test_a_load_that_keeps_failing_escapes_classified(
    client: FakeClient, staging: BigQueryStaging, tmp_path: Path
) -> None:
    client.outcomes = [gexc.ServiceUnavailable("down")] * 3
    with pytest.raises(errors.LoadError, match=r"^503 down$"):
        staging.load_part(part(tmp_path))
    # no job was created: every try asked for the same id
    assert client.inserted == [f"etl_{RUN}_a2_{staging.token}_p0"] * 3


def applied_entry(staging: BigQueryStaging, token: str) -> LedgerEntry:
    return LedgerEntry(
        run_id=RUN, data_source_id=1, etl_run_id=None, dest_table="orders", load_type="catalog",
        window_column=None, window_low=None, window_high=None, rows_extracted=0, rows_loaded=0,
        batches_loaded=0, source_row_count=None, attempt=2, completed_seq=3, staging_token=token,
        started_at=datetime(2024, 1, 1, tzinfo=UTC), committed_at=datetime(2024, 1, 1, tzinfo=UTC),
        duration_seconds=1.0,
    )


def test_a_retried_commit_whose_job_exists_waits_on_it(client: FakeClient, staging: BigQueryStaging) -> None:
    entry = applied_entry(staging, staging.token)
    client.created_anyway = FakeJob("commit")
    client.outcomes = [gexc.ServiceUnavailable("connection reset")]
    client.ledger_rows = (dataclasses.asdict(entry),)

    assert staging.commit(entry) == entry
    commit_id = f"etl_{RUN}_a2_{staging.token}_commit"
    assert client.inserted == [commit_id, commit_id]
    assert client.fetched == [commit_id]


def test_commit_returns_the_earlier_delivery_entry(client: FakeClient, staging: BigQueryStaging) -> None:
    earlier = applied_entry(staging, "0ld70ken")
    client.outcomes = [FakeJob("commit")]
    client.ledger_rows = (dataclasses.asdict(earlier),)
    assert staging.commit(applied_entry(staging, staging.token)) == earlier


# A failed commit script's job: BigQuery words a script's error "Query error: <text> at [line:col]"
# (as in TRANSACTION_ABORTED); the verification's text is the script's own ERROR().
VERIFICATION = f"Query error: {VERIFICATION_MARKER} staging holds 2 rows, 3 were extracted at [7:5]"
# A 400 with none of the texts the worker reads (BigQuery documents no text for a PARSE_JSON
# failure): its class alone decides.
REJECTED = "Query error: a value the destination refuses at [12:3]"


@pytest.mark.parametrize(
    ("failure", "expected", "tries", "message"),
    [
        (job_error("invalidQuery", VERIFICATION), errors.VerificationError, 1,
         "staging holds 2 rows, 3 were extracted at [7:5]"),
        (gexc.BadRequest(TRANSACTION_ABORTED), errors.LoadError, 3,
         f"commit lost a race with a concurrent transaction: 400 {TRANSACTION_ABORTED}"),
        (job_error("invalidQuery", SERIALIZE), errors.LoadError, 3,
         f"commit lost a race with a concurrent transaction: 400 {SERIALIZE}"),
        (job_error("quotaExceeded", PROJECT_QUOTA), errors.LoadError, 3, f"403 {PROJECT_QUOTA}"),
        (job_error("rateLimitExceeded", RATE_LIMITS), errors.LoadError, 3, f"429 {RATE_LIMITS}"),
        (job_error("backendError", BACKEND_ERROR), errors.LoadError, 3, "500 "),
        (job_error("invalidQuery", REJECTED), errors.DataRejectedError, 1, f"400 {REJECTED}"),
    ],
    ids=["verification", "transaction-aborted", "serialize", "quota", "rate-limit", "backend", "rejected"],
)
def test_commit_failures_are_typed(
    client: FakeClient, staging: BigQueryStaging, failure: gexc.GoogleAPICallError,
    expected: type[errors.EtlError], tries: int, message: str,
) -> None:
    client.outcomes = [FakeJob("commit", error=failure) for _ in range(3)]
    with pytest.raises(expected) as caught:
        staging.commit(applied_entry(staging, staging.token))
    assert str(caught.value) == message
    # a transient failure is retried (each failed job under the next id), a permanent one is not
    commit_id = f"etl_{RUN}_a2_{staging.token}_commit"
    assert client.inserted == [commit_id, f"{commit_id}_r1", f"{commit_id}_r2"][:tries]


def test_a_refused_commit_insert_over_quota_is_retried_under_the_same_id(
    client: FakeClient, staging: BigQueryStaging
) -> None:
    # Given jobs.insert itself refused twice, as BigQuery refuses a call over its rate limits (403)
    entry = applied_entry(staging, staging.token)
    refused = api_error(403, RATE_LIMITS, "rateLimitExceeded")
    client.outcomes = [refused, refused, FakeJob("commit")]
    client.ledger_rows = (dataclasses.asdict(entry),)
    # Then the commit is retried, under the same job id (no job was created), and applied
    assert staging.commit(entry) == entry
    commit_id = f"etl_{RUN}_a2_{staging.token}_commit"
    assert client.inserted == [commit_id] * 3


def test_commit_refuses_an_entry_of_another_delivery(staging: BigQueryStaging) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        staging.commit(applied_entry(staging, "other"))


def test_two_deliveries_of_one_attempt_never_share_a_job_id(
    client: FakeClient, staging: BigQueryStaging, tmp_path: Path
) -> None:
    # Given a second worker handling the same delivery attempt of the run at the same time
    other = BigQuerySink(
        cast(bigquery.Client, client), project="p", dataset="d", retry=RetryPolicy(max_tries=1),
    ).open_staging("orders", COLUMNS, RUN, 2, "catalog")
    client.outcomes = [FakeJob("a", output_rows=1), FakeJob("b", output_rows=1),
                       FakeJob("c"), FakeJob("d")]
    client.ledger_rows = (dataclasses.asdict(applied_entry(staging, staging.token)),)
    # When both load a part and commit
    staging.load_part(part(tmp_path))
    other.load_part(part(tmp_path))
    first = applied_entry(staging, staging.token)
    assert staging.commit(first) == first
    assert other.commit(applied_entry(other, other.token)) == first  # the ledger's, run applied once
    # Then each staging has its own token, and its own job ids and staging table: no 409 makes one
    # wait on the other's job (that is the runner's reliance on `token`)
    assert staging.token != other.token
    assert staging.table_name != other.table_name
    assert client.inserted == [
        f"etl_{RUN}_a2_{staging.token}_p0", f"etl_{RUN}_a2_{other.token}_p0",
        f"etl_{RUN}_a2_{staging.token}_commit", f"etl_{RUN}_a2_{other.token}_commit",
    ]
    assert client.fetched == []
