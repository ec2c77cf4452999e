"""The statements of a chunked catalog run (worker/catalog_chunks.py) on bqemulator: only the rows
of a chunk's marked try count (a try killed before its mark never does), a chunk marked by two
tries counts one of them, and a losing plan's chunks never count."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.cloud import bigquery

from tests.conftest import PROJECT
from worker.catalog_chunks import MARK_COLUMNS, final_rows_sql, mark_chunk_sql
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


def load(client: bigquery.Client, ds: str, chunk: int, attempt: str, rows: list[tuple[int, str]],
         read_at: datetime, plan: str = "plan-a", *, mark: bool = True) -> None:
    """One try of a chunk: its rows (as its load jobs would append them), then its mark."""
    values = ", ".join(f"({i}, '{v}', {chunk}, '{plan}', TIMESTAMP '{read_at.isoformat()}', '{attempt}')"
                       for i, v in rows)
    run(client, f"INSERT INTO {ds}.staged (id, v, {', '.join(MARK_COLUMNS)}) VALUES {values}")
    if mark:
        run(client, mark_chunk_sql(f"{ds}.done"), chunk=chunk, plan=plan, read_at=read_at, rows=len(rows),
            nulled="{}", **{"try": attempt})


def test_only_marked_tries_count_once_per_chunk(bq_client: bigquery.Client, bq_dataset: str) -> None:
    ds = f"`{PROJECT}`.`{bq_dataset}`"
    bq_client.create_dataset(f"{PROJECT}.{bq_dataset}", exists_ok=True)
    create(bq_client, bq_dataset, "staged", id="INT64", v="STRING",
           **dict(zip(MARK_COLUMNS, ("INT64", "STRING", "TIMESTAMP", "STRING"), strict=True)))
    create(bq_client, bq_dataset, "done", chunk="INT64", plan_id="STRING", try_token="STRING",
           rows_staged="INT64", read_at="TIMESTAMP", values_nulled="STRING")
    load(bq_client, ds, 1, "t1", [(1, "half")], T1, mark=False)  # killed before its mark
    load(bq_client, ds, 1, "t2", [(1, "a"), (2, "b")], T1)
    load(bq_client, ds, 2, "t3", [(3, "c"), (4, "d")], T2)
    load(bq_client, ds, 2, "t4", [(3, "c"), (4, "d")], T2)  # a racing delivery finished it too
    load(bq_client, ds, 1, "t5", [(1, "lost"), (9, "lost")], T2, plan="plan-b")  # a losing plan's
    final = run(bq_client, f"SELECT * FROM ({final_rows_sql(f'{ds}.staged', f'{ds}.done', ['id', 'v'])}) "
                           "ORDER BY id", plan="plan-a")
    assert final == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}, {"id": 4, "v": "d"}]
