"""The merge commit against bqemulator: upsert by key, newest version wins, soft and reconciled
deletes, all in the one transaction with the ledger row."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.cloud import bigquery

from tests.conftest import PROJECT
from worker import errors
from worker.columns import Column, arrow_schema
from worker.constants import MERGE
from worker.ledger import LedgerEntry
from worker.retry import RetryPolicy
from worker.sinks.base import MergePlan
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging
from worker.spool import PartWriter

ID = Column("id", "integer", pa.int64(), "INT64")
LINE = Column("line", "integer", pa.int64(), "INT64")
NAME = Column("name", "text", pa.string(), "STRING")
TS = Column("ts", "timestamptz", pa.timestamp("us", tz="UTC"), "TIMESTAMP")
GONE = Column("gone", "boolean", pa.bool_(), "BOOL")
DELETED_AT = Column("deleted_at", "timestamptz", pa.timestamp("us", tz="UTC"), "TIMESTAMP")
DOC = Column("doc", "jsonb", pa.string(), "JSON")
COLUMNS = (ID, NAME, TS, GONE)
PLAN = MergePlan(key=("id",), cursor="ts", soft_delete="gone")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
Rows = Sequence[dict[str, Any]]
_windows = iter(range(1, 10_000))


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def row(i: int, name: str, days: int, gone: bool | None = None) -> dict[str, Any]:
    return {"id": i, "name": name, "ts": at(days), "gone": gone}


@pytest.fixture
def sink(bq_client: bigquery.Client, bq_dataset: str) -> BigQuerySink:
    return BigQuerySink(bq_client, project=PROJECT, dataset=bq_dataset,
                        retry=RetryPolicy(max_tries=1, first_delay_s=0), emulator=True)


@pytest.fixture
def table(bq_client: bigquery.Client, bq_dataset: str) -> Callable[[], list[tuple[Any, ...]]]:
    def rows() -> list[tuple[Any, ...]]:
        query = f"SELECT * FROM `{PROJECT}.{bq_dataset}.items` ORDER BY id, name"
        return [tuple(r.values()) for r in bq_client.query(query, job_retry=None).result()]

    return rows


def _load(staging: BigQueryStaging, load: Callable[[Path], int], columns: tuple[Column, ...], rows: Rows,
          tmp_path: Path) -> int:
    with PartWriter(columns, part_rows=2, spool_dir=tmp_path) as writer:
        batch = pa.RecordBatch.from_pylist(list(rows), schema=arrow_schema(columns))
        return sum(load(path) for path in [*writer.write(batch), *writer.finish()])


def merge(sink: BigQuerySink, tmp_path: Path, rows: Rows, run_id: str, *, plan: MergePlan = PLAN,
          columns: tuple[Column, ...] = COLUMNS, keys: Rows | None = None, **changes: Any) -> LedgerEntry:
    """Stage `rows` (and `keys`, for a reconciling plan) and commit them as one merge run."""
    staging = sink.open_staging("items", columns, run_id, 1, MERGE, merge=plan)
    try:
        staged = _load(staging, staging.load_part, columns, rows, tmp_path)
        keys_staged = None
        if keys is not None:
            key_columns = tuple(c for c in columns if c.name in plan.key)
            keys_staged = _load(staging, staging.load_keys_part, key_columns, keys, tmp_path)
        day = next(_windows)
        entry = LedgerEntry(
            run_id=run_id, data_source_id=3, etl_run_id=None, dest_table="items", load_type=MERGE,
            window_column="ts", window_low=None, window_high=None, rows_extracted=len(rows),
            rows_loaded=staged, batches_loaded=1, source_row_count=len(rows), attempt=1, completed_seq=3,
            staging_token=staging.token, started_at=T0, committed_at=datetime.now(UTC),
            duration_seconds=1.0, window_low_key=f"{day:05d}", window_high_key=f"{day + 1:05d}",
            keys_extracted=keys_staged,
        )
        return staging.commit(dataclasses.replace(entry, **changes))
    finally:
        staging.drop()


SEED = [row(1, "a", 1), row(2, "b", 1), row(3, "c", 5)]


def test_new_keys_are_inserted_and_known_keys_updated(sink: BigQuerySink, tmp_path: Path,
                                                      table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    merge(sink, tmp_path, [row(1, "a2", 2), row(4, "d", 2)], "run-2")
    assert table() == [(1, "a2", at(2), None), (2, "b", at(1), None), (3, "c", at(5), None),
                       (4, "d", at(2), None)]


def test_of_several_versions_in_one_window_the_newest_wins(sink: BigQuerySink, tmp_path: Path,
                                                           table: Any) -> None:
    merge(sink, tmp_path, [row(1, "old", 1), row(1, "newest", 3), row(1, "middle", 2)], "run-1")
    assert table() == [(1, "newest", at(3), None)]


def test_a_tie_on_the_cursor_picks_the_same_version_whatever_the_order(
    sink: BigQuerySink, bq_client: bigquery.Client, bq_dataset: str, tmp_path: Path, table: Any
) -> None:
    merge(sink, tmp_path, [row(1, "x", 1), row(1, "y", 1)], "run-1")
    first = table()
    bq_client.query(f"DELETE FROM `{PROJECT}.{bq_dataset}.items` WHERE TRUE", job_retry=None).result()
    merge(sink, tmp_path, [row(1, "y", 1), row(1, "x", 1)], "run-2")
    assert table() == first and len(first) == 1


def test_an_older_version_applied_late_never_overwrites_a_newer_one(sink: BigQuerySink, tmp_path: Path,
                                                                    table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    merge(sink, tmp_path, [row(3, "stale", 2)], "run-2")  # the destination has day 5
    assert (3, "c", at(5), None) in table()


def test_soft_deleted_rows_are_deleted_and_never_inserted(sink: BigQuerySink, tmp_path: Path,
                                                          table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    merge(sink, tmp_path, [row(1, "a", 2, gone=True), row(2, "b", 2, gone=False), row(9, "z", 2, gone=True)],
          "run-2")
    assert [r[0] for r in table()] == [2, 3]


def test_a_timestamp_soft_delete_column_deletes_when_set(sink: BigQuerySink, tmp_path: Path,
                                                         table: Any) -> None:
    columns, plan = (ID, NAME, TS, DELETED_AT), MergePlan(key=("id",), cursor="ts", soft_delete="deleted_at")
    seed = [{"id": i, "name": "n", "ts": at(1), "deleted_at": None} for i in (1, 2)]
    merge(sink, tmp_path, seed, "run-1", plan=plan, columns=columns)
    merge(sink, tmp_path, [{"id": 1, "name": "n", "ts": at(2), "deleted_at": at(2)}], "run-2",
          plan=plan, columns=columns)
    assert [r[0] for r in table()] == [2]


def test_reconcile_deletes_the_keys_the_source_no_longer_has(sink: BigQuerySink, tmp_path: Path,
                                                             table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    plan = dataclasses.replace(PLAN, reconcile=True)
    entry = merge(sink, tmp_path, [row(4, "d", 6)], "run-2", plan=plan, keys=[{"id": 1}, {"id": 4}])
    assert [r[0] for r in table()] == [1, 4]
    assert entry.keys_extracted == 2


def test_composite_keys_match_on_every_column(sink: BigQuerySink, tmp_path: Path, table: Any) -> None:
    columns, plan = (ID, LINE, NAME, TS), MergePlan(key=("id", "line"), cursor="ts")
    seed = [{"id": 1, "line": n, "name": f"l{n}", "ts": at(1)} for n in (1, 2)]
    merge(sink, tmp_path, seed, "run-1", plan=plan, columns=columns)
    merge(sink, tmp_path, [{"id": 1, "line": 2, "name": "l2-new", "ts": at(2)}], "run-2", plan=plan,
          columns=columns)
    assert [(r[1], r[2]) for r in table()] == [(1, "l1"), (2, "l2-new")]


def test_json_columns_are_parsed_in_the_merge(sink: BigQuerySink, tmp_path: Path,
                                              bq_client: bigquery.Client, bq_dataset: str) -> None:
    columns, plan = (ID, TS, DOC), MergePlan(key=("id",), cursor="ts")
    merge(sink, tmp_path, [{"id": 1, "ts": at(1), "doc": '{"a":1}'}], "run-1", plan=plan, columns=columns)
    merge(sink, tmp_path, [{"id": 1, "ts": at(2), "doc": '{"a":[2,null]}'}], "run-2", plan=plan,
          columns=columns)
    query = f"SELECT TO_JSON_STRING(doc) AS doc FROM `{PROJECT}.{bq_dataset}.items`"
    assert [r["doc"] for r in bq_client.query(query, job_retry=None).result()] == ['{"a":[2,null]}']


def test_a_null_key_is_refused_and_nothing_is_applied(sink: BigQuerySink, tmp_path: Path, table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    with pytest.raises(errors.SourceDataError, match="primary key column"):
        merge(sink, tmp_path, [row(5, "e", 2), {"id": None, "name": "?", "ts": at(2), "gone": None}], "run-2")
    assert [r[0] for r in table()] == [1, 2, 3]


def test_staged_keys_that_disagree_with_the_count_commit_nothing(sink: BigQuerySink, tmp_path: Path,
                                                                 table: Any) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    plan = dataclasses.replace(PLAN, reconcile=True)
    with pytest.raises(errors.VerificationError, match="keys"):
        merge(sink, tmp_path, [row(4, "d", 6)], "run-2", plan=plan, keys=[{"id": 4}], keys_extracted=2)
    assert [r[0] for r in table()] == [1, 2, 3]


def test_the_same_merge_run_again_changes_nothing(sink: BigQuerySink, tmp_path: Path, table: Any) -> None:
    first = merge(sink, tmp_path, SEED, "run-1")
    again = merge(sink, tmp_path, [row(1, "other", 9)], "run-1")
    assert again.staging_token == first.staging_token
    assert [r[1] for r in table()] == ["a", "b", "c"]


def test_a_new_merge_destination_is_clustered_by_its_key(
    sink: BigQuerySink, tmp_path: Path, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    merge(sink, tmp_path, SEED, "run-1")
    assert bq_client.get_table(f"{PROJECT}.{bq_dataset}.items").clustering_fields == ["id"]
