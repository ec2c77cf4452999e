"""The two statements of a chunked catalog run (worker/catalog_chunks.py) on bqemulator: staging a
chunk again replaces its earlier rows and mark (a half-staged try is never counted twice), and the
final rows hold one version per key, the one read last."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.cloud import bigquery

from tests.conftest import PROJECT
from worker.catalog_chunks import CHUNK_COLUMN, PLAN_COLUMN, READ_AT_COLUMN, final_rows_sql, stage_chunk_sql
from worker.sinks import emulator_compat

T1, T2 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 13, 0, tzinfo=UTC)


def run(client: bigquery.Client, text: str, **params: Any) -> list[dict[str, Any]]:
    kinds = {int: "INT64", str: "STRING", datetime: "TIMESTAMP"}
    given = [bigquery.ScalarQueryParameter(name, kinds[type(value)], value) for name, value in params.items()]
    text, kept = emulator_compat.script_query(text, given, emulator=True)  # its scripts take no parameters
    config = bigquery.QueryJobConfig(query_parameters=kept)
    return [dict(row) for row in client.query(text, job_config=config, job_retry=None).result()]


def create(client: bigquery.Client, dataset: str, name: str, **columns: str) -> None:
    fields = [bigquery.SchemaField(column, kind) for column, kind in columns.items()]
    client.create_table(bigquery.Table(f"{PROJECT}.{dataset}.{name}", schema=fields))


def stage(client: bigquery.Client, ds: str, chunk: int, rows: list[tuple[int, str]], read_at: datetime,
          plan: str = "plan-a") -> None:
    run(client, f"DELETE FROM {ds}.loaded WHERE TRUE")
    if rows:
        values = ", ".join(f"({i}, '{v}')" for i, v in rows)
        run(client, f"INSERT INTO {ds}.loaded (id, v) VALUES {values}")
    run(client, stage_chunk_sql(f"{ds}.staged", f"{ds}.loaded", f"{ds}.done", ["id", "v"]),
        chunk=chunk, plan=plan, read_at=read_at, rows=len(rows))


def test_a_chunk_staged_again_replaces_itself_and_the_newest_version_wins(
    bq_client: bigquery.Client, bq_dataset: str
) -> None:
    ds = f"`{PROJECT}`.`{bq_dataset}`"
    bq_client.create_dataset(f"{PROJECT}.{bq_dataset}", exists_ok=True)
    create(bq_client, bq_dataset, "staged", id="INT64", v="STRING", **{CHUNK_COLUMN: "INT64",
                                                                      PLAN_COLUMN: "STRING",
                                                                      READ_AT_COLUMN: "TIMESTAMP"})
    create(bq_client, bq_dataset, "done", chunk="INT64", plan_id="STRING", rows_staged="INT64",
           read_at="TIMESTAMP")
    create(bq_client, bq_dataset, "loaded", id="INT64", v="STRING")
    stage(bq_client, ds, 1, [(1, "a"), (2, "b")], T1)
    stage(bq_client, ds, 1, [(1, "a"), (2, "b"), (3, "c")], T1)  # the chunk read again: replaced
    stage(bq_client, ds, 2, [(3, "c-moved"), (4, "d")], T2)  # key 3 read again in a later chunk
    stage(bq_client, ds, 1, [(1, "lost"), (9, "lost")], T2, plan="plan-b")  # a losing plan's chunk
    stage(bq_client, ds, 1, [(1, "lost"), (9, "lost")], T2, plan="plan-b")
    marks = run(bq_client, f"SELECT chunk, rows_staged FROM {ds}.done WHERE plan_id = 'plan-a' "
                           "ORDER BY chunk")
    assert marks == [{"chunk": 1, "rows_staged": 3}, {"chunk": 2, "rows_staged": 2}]
    assert run(bq_client, f"SELECT COUNT(*) AS n FROM {ds}.staged") == [{"n": 7}]
    final = run(bq_client, f"SELECT * FROM ({final_rows_sql(f'{ds}.staged', ['id', 'v'], ['id'])}) "
                           "ORDER BY id", plan="plan-a")
    assert final == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c-moved"}, {"id": 4, "v": "d"}]
