"""A job's commit on bqemulator: every table and its ledger row in ONE transaction, or none; the
run found applied by a later delivery; a destination that cannot take a table refused unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.sinks.test_bigquery_emulator import ID, NAME, entry_for, query, sink
from worker import errors
from worker.columns import arrow_schema
from worker.constants import CATALOG, TRANSACTIONAL
from worker.ledger import LedgerEntry
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging
from worker.spool import PartWriter

__all__ = ["query", "sink"]
Query = Callable[[str], list[dict[str, Any]]]
TABLES = (("customers", CATALOG), ("orders", TRANSACTIONAL), ("lines", CATALOG))


def staged(sink: BigQuerySink, tmp_path: Path, dest: str, load_type: str, rows: list[dict[str, Any]],
           run_id: str) -> BigQueryStaging:
    staging = sink.open_staging(dest, (ID, NAME), run_id, 1, load_type)
    with PartWriter((ID, NAME), part_rows=2, spool_dir=tmp_path) as writer:
        batch = pa.RecordBatch.from_pylist(rows, schema=arrow_schema((ID, NAME)))
        for path in [*writer.write(batch), *writer.finish()]:
            staging.load_part(path)
    return staging


@pytest.fixture
def job(sink: BigQuerySink, tmp_path: Path) -> Iterator[Callable[..., tuple[LedgerEntry, ...]]]:
    """Stage `rows` into each of TABLES under `run_id` and commit them as one job; `changes` per
    table index alter its ledger entry (e.g. a count the staging does not hold)."""
    opened: list[BigQueryStaging] = []

    def commit(run_id: str, rows: list[dict[str, Any]], **changes: dict[str, Any]) -> tuple[LedgerEntry, ...]:
        stagings = [staged(sink, tmp_path, dest, mode, rows, run_id) for dest, mode in TABLES]
        opened.extend(stagings)
        return sink.commit_job([
            (staging, dataclasses.replace(entry_for(staging, len(rows)), table_index=index,
                                          **changes.get(f"t{index}", {})))
            for index, staging in enumerate(stagings)])

    yield commit
    for staging in opened:
        staging.drop()


def contents(query: Query) -> dict[str, list[int]]:
    return {dest: [r["id"] for r in query(f"SELECT id FROM {{ds}}.{dest} ORDER BY id")] for dest, _ in TABLES}


def rows(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"n{i}"} for i in ids]


def test_a_job_commits_every_table_and_one_ledger_row_each_in_one_transaction(
    job: Callable[..., tuple[LedgerEntry, ...]], sink: BigQuerySink, query: Query
) -> None:
    entries = job("job-1", rows(1, 2, 3))
    assert contents(query) == {"customers": [1, 2, 3], "orders": [1, 2, 3], "lines": [1, 2, 3]}
    assert [(e.dest_table, e.table_index) for e in entries] == [("customers", 0), ("orders", 1), ("lines", 2)]
    assert len({e.committed_at for e in entries}) == 1  # one statement wrote them: one clock reading
    assert sink.find_job("job-1") == entries and sink.find_commit("job-1") == entries[0]


def test_a_failing_check_in_the_third_table_rolls_every_table_back(
    job: Callable[..., tuple[LedgerEntry, ...]], sink: BigQuerySink, query: Query
) -> None:
    job("job-1", rows(1, 2))
    # When the next job's third table claims a row its staging does not hold
    with pytest.raises(errors.VerificationError, match="staging of lines holds 3 rows, 4 were extracted"):
        job("job-2", rows(5, 6, 7), t2={"rows_extracted": 4})
    # Then the first two tables' replace and append were rolled back with it
    assert contents(query) == {"customers": [1, 2], "orders": [1, 2], "lines": [1, 2]}
    assert sink.find_job("job-2") == ()


def test_a_later_delivery_of_a_committed_job_finds_it_applied_and_changes_nothing(
    job: Callable[..., tuple[LedgerEntry, ...]], sink: BigQuerySink, query: Query
) -> None:
    first = job("job-1", rows(1, 2))
    again = job("job-1", rows(1, 2))  # its own stagings and tokens
    assert again == first and again[0].staging_token != "" and len(sink.find_job("job-1")) == 3
    assert contents(query) == {"customers": [1, 2], "orders": [1, 2], "lines": [1, 2]}


def test_a_destination_that_cannot_take_its_table_is_refused_without_change(
    sink: BigQuerySink, bq_client: bigquery.Client, bq_dataset: str, tmp_path: Path
) -> None:
    sink.ensure_ledger()
    table_id = f"{PROJECT}.{bq_dataset}.lines"
    bq_client.create_table(bigquery.Table(table_id, schema=[bigquery.SchemaField("id", "STRING")]))
    sink.check_destination("absent", (ID, NAME))  # nothing there yet: any columns will do
    with pytest.raises(errors.SchemaMismatchError, match="destination has STRING, source now gives INT64"):
        sink.check_destination("lines", (ID, NAME))
    assert [field.name for field in bq_client.get_table(table_id).schema] == ["id"]


def test_only_this_sinks_stagings_can_join_its_job(sink: BigQuerySink) -> None:
    class Foreign:
        token = "x"

    with pytest.raises(TypeError, match="own staging"):
        sink.commit_job([(Foreign(), None)])  # type: ignore[list-item]  # a foreign staging, on purpose

