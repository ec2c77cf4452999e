"""A chunked catalog run's tables on bqemulator (worker/sinks/bigquery_chunks.py): the plan stored
by the first delivery is every delivery's, a chunk staged twice counts once, the final staging
holds one row per key and the ordinary catalog commit applies it with the ledger row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from tests.sinks.test_bigquery_emulator import ID, NAME, entry_for, query, sink  # noqa: F401 (fixtures)
from worker.catalog_chunks import ChunkPlan, plan_of
from worker.columns import arrow_schema
from worker.sinks.bigquery import BigQuerySink
from worker.sinks.bigquery_chunks import RunChunks, load_parts
from worker.spool import PartWriter

COLUMNS = (ID, NAME)
T1, T2 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 13, 0, tzinfo=UTC)


def no_plan() -> ChunkPlan:
    raise AssertionError("a redelivery reads the stored plan")


def stage(chunks: RunChunks, tmp_path: Path, number: int, rows: list[dict[str, Any]], read_at: datetime
          ) -> None:
    loaded = chunks.chunk_staging(number)
    try:
        with PartWriter(COLUMNS, part_rows=2, spool_dir=tmp_path) as writer:
            batch = pa.RecordBatch.from_pylist(rows, schema=arrow_schema(COLUMNS))
            load_parts(loaded, [*writer.write(batch), *writer.finish()])
        chunks.finish_chunk(number, loaded, read_at)
    finally:
        loaded.drop()


def test_a_run_s_chunks_resume_and_commit_once(
    sink: BigQuerySink, tmp_path: Path, bq_client: bigquery.Client,  # noqa: F811
    query: Callable[[str], list[dict[str, Any]]],  # noqa: F811
) -> None:
    chunks = RunChunks(sink, "run-chunked-1", "orders", COLUMNS, attempt=1)
    plan, finished = chunks.open(lambda: plan_of(("id",), [(3,)]))
    assert plan.bounds == ((3,),) and finished == frozenset()
    stage(chunks, tmp_path, 1, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], T1)
    # A redelivery: same plan, chunk 1 finished; chunk 2 staged twice (a kill after its rows and
    # mark, then read again) and key 2 read again by it, moved by an update.
    again = RunChunks(sink, "run-chunked-1", "orders", COLUMNS, attempt=2)
    assert again.open(no_plan) == (plan, frozenset({1}))
    for _ in range(2):
        stage(again, tmp_path, 2, [{"id": 2, "name": "b2"}, {"id": 3, "name": "c"}], T2)
    assert again.finished() == frozenset({1, 2})
    final, rows = again.final_staging(("id",))
    assert rows == 3
    try:
        entry = entry_for(final, rows)
        (in_force,) = sink.commit_job([(final, entry)])
    finally:
        final.drop()
    assert in_force.staging_token == final.token
    got = query("SELECT id, name FROM {ds}.orders ORDER BY id")
    assert got == [{"id": 1, "name": "a"}, {"id": 2, "name": "b2"}, {"id": 3, "name": "c"}]
    again.drop()
    dataset = f"{sink.target.project}.{sink.target.dataset}"
    names = {table.table_id for table in bq_client.list_tables(dataset)}
    assert chunks.staging_table not in names and chunks.record_table not in names
