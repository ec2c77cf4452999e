"""A chunked catalog run's tables on bqemulator (worker/sinks/bigquery_chunks.py): the plan stored
by the first delivery is every delivery's, a try killed before its mark never counts, a chunk
finished by two tries counts once, the final staging (a view) holds the finished chunks' rows and
the ordinary catalog commit applies it with the ledger row; chunks of a plan that lost the race of
two first deliveries never count."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.cloud import bigquery

from tests.sinks.test_bigquery_emulator import ID, NAME, entry_for, query, sink  # noqa: F401 (fixtures)
from worker.catalog_chunks import ChunkPlan, plan_of
from worker.columns import arrow_schema
from worker.errors import LoadError
from worker.sinks.base import StagedChunks
from worker.sinks.bigquery import BigQuerySink
from worker.sinks.bigquery_chunks import RunChunks, load_parts
from worker.spool import PartWriter

COLUMNS = (ID, NAME)
T1, T2 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 13, 0, tzinfo=UTC)


def no_plan() -> ChunkPlan:
    raise AssertionError("a redelivery reads the stored plan")


def stage(chunks: RunChunks, tmp_path: Path, number: int, rows: list[dict[str, Any]], read_at: datetime,
          *, mark: bool = True, nulled: dict[str, int] | None = None) -> None:
    """One try of a chunk: its rows loaded in parts of 2, then (unless killed first) its mark."""
    loads = chunks.chunk_loader(number, read_at)
    with PartWriter(loads.columns, part_rows=2, spool_dir=tmp_path) as writer:
        batch = loads.marked(pa.RecordBatch.from_pylist(rows, schema=arrow_schema(COLUMNS)))
        load_parts(loads, [*writer.write(batch), *writer.finish()])
    if mark:
        assert chunks.staged_rows(loads) == len(rows)
        chunks.finish_chunk(number, loads, len(rows), nulled)


def test_a_run_s_chunks_resume_and_commit_once(
    sink: BigQuerySink, tmp_path: Path, bq_client: bigquery.Client,  # noqa: F811
    query: Callable[[str], list[dict[str, Any]]],  # noqa: F811
) -> None:
    chunks = RunChunks(sink, "run-chunked-1", "orders", COLUMNS, attempt=1)
    plan, finished = chunks.open(lambda: plan_of(("id",), [(3,)]))
    assert plan.bounds == ((3,),) and finished == frozenset()
    stage(chunks, tmp_path, 1, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], T1, nulled={"name": 1})
    # A try of chunk 2 killed after its rows were loaded, before its mark: it never counts
    stage(chunks, tmp_path, 2, [{"id": 3, "name": "lost"}, {"id": 4, "name": "lost"}], T1, mark=False,
          nulled={"name": 5})
    # A redelivery: same plan, chunk 1 finished; chunk 2 finished by two tries (a kill after its
    # mark, then read again by a racing delivery): one try counts
    again = RunChunks(sink, "run-chunked-1", "orders", COLUMNS, attempt=2)
    assert again.open(no_plan) == (plan, frozenset({1}))
    for _ in range(2):
        stage(again, tmp_path, 2, [{"id": 3, "name": "c"}], T2, nulled={"name": 2, "id": 0})
    # (and the values loaded as NULL are every finished chunk's, one try each, whoever read them)
    assert again.finished() == frozenset({1, 2})
    assert again.staged() == StagedChunks(3, T1, {"name": 3, "id": 0})
    final, staged = again.final_staging()
    assert staged.rows == 3
    try:
        entry = entry_for(final, staged.rows)
        (in_force,) = sink.commit_job([(final, entry)])
    finally:
        final.drop()
    assert in_force.staging_token == final.token
    got = query("SELECT id, name FROM {ds}.orders ORDER BY id")
    assert got == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    again.drop()
    dataset = f"{sink.target.project}.{sink.target.dataset}"
    names = {table.table_id for table in bq_client.list_tables(dataset)}
    assert chunks.staging_table not in names and chunks.record_table not in names


def test_chunks_of_a_plan_that_lost_the_race_never_count(
    sink: BigQuerySink, tmp_path: Path,  # noqa: F811
    query: Callable[[str], list[dict[str, Any]]],  # noqa: F811
) -> None:
    # Given a first delivery that stored and read its own plan, when a racing first delivery's plan
    # is stored with an earlier time (its job started first, committed later), then the first
    # delivery's chunks are not counted, its final staging is refused as transient, and the next
    # delivery follows the winning plan from its first chunk
    mine = RunChunks(sink, "run-chunked-race", "orders", COLUMNS, attempt=1)
    mine.open(lambda: plan_of(("id",), [(3,)]))
    winner = plan_of(("id",), [(2,)])
    stored = winner.to_text().replace("{", "{{").replace("}", "}}")  # query() formats {ds}
    query(f"INSERT INTO {{ds}}.{mine.record_table} (chunk, plan_id, read_at, plan) VALUES "
          f"(0, '{winner.identity}', TIMESTAMP '2000-01-01 00:00:00+00', '{stored}')")
    stage(mine, tmp_path, 1, [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], T1)
    stage(mine, tmp_path, 2, [{"id": 3, "name": "c"}], T1)
    with pytest.raises(LoadError, match="another delivery's chunk plan"):
        mine.final_staging()
    nxt = RunChunks(sink, "run-chunked-race", "orders", COLUMNS, attempt=2)
    assert nxt.open(no_plan) == (winner, frozenset())
    stage(nxt, tmp_path, 1, [{"id": 1, "name": "a"}], T2)
    with pytest.raises(LoadError, match=r"chunks \[2\] are not staged"):
        nxt.final_staging()
    stage(nxt, tmp_path, 2, [{"id": 2, "name": "b"}, {"id": 3, "name": "c"}], T2)
    final, staged = nxt.final_staging()
    try:
        assert staged.rows == 3
    finally:
        final.drop()
        nxt.drop()
