"""A chunked catalog run's own tables in BigQuery (worker/catalog_chunks.py has the rules).

`RunChunks` is the run's staging (every delivery's chunks, with their chunk number and read time)
and its chunk record (the plan as row 0, then one row per finished chunk). A chunk's rows are
loaded through an ordinary delivery staging table (the sink's loads, job ids and retries), then
moved into the run's staging by ONE script with its finished mark. `final_staging` is an ordinary
delivery staging of the run whose table is a VIEW of the run's staging, one row per key, which the
ordinary catalog commit (`Sink.commit_job`) then applies with the ledger row, in one transaction:
the rows are copied once more, into the destination, not also into a staging table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import bigquery

from worker.catalog_chunks import (
    CHUNK_COLUMN,
    PLAN_COLUMN,
    READ_AT_COLUMN,
    ChunkPlan,
    chunk_record_name,
    final_rows_view_sql,
    run_staging_name,
    stage_chunk_sql,
    unfinished,
)
from worker.columns import Column
from worker.constants import CATALOG
from worker.errors import LoadError
from worker.sinks import bigquery_schema as schema
from worker.sinks import emulator_compat
from worker.sinks.base import Staging
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging

log = logging.getLogger(__name__)
_RECORD_FIELDS = (("chunk", "INT64"), ("plan_id", "STRING"), ("rows_staged", "INT64"),
                  ("read_at", "TIMESTAMP"), ("plan", "STRING"))


@dataclass
class RunChunks:
    sink: BigQuerySink
    run_id: str
    dest_table: str
    columns: tuple[Column, ...]
    attempt: int
    _plan: ChunkPlan | None = field(default=None, init=False)  # the one this delivery follows
    _first: BigQueryStaging | None = field(default=None, init=False)  # prepared the destination

    @property
    def staging_table(self) -> str:
        return run_staging_name(self.run_id)

    @property
    def record_table(self) -> str:
        return chunk_record_name(self.run_id)

    def open(self, plan: Callable[[], ChunkPlan]) -> tuple[ChunkPlan, frozenset[int]]:
        """Create the run's two tables if missing; the stored plan (`plan()` is called and stored
        only by the run's first delivery) and the chunks already finished."""
        self.sink.ensure_ledger()
        marks = (bigquery.SchemaField(CHUNK_COLUMN, "INT64"), bigquery.SchemaField(PLAN_COLUMN, "STRING"),
                 bigquery.SchemaField(READ_AT_COLUMN, "TIMESTAMP"))
        staged = (*schema.schema_fields(self.columns, staging=True), *marks)
        self._create(self.staging_table, staged)
        self._create(self.record_table, tuple(bigquery.SchemaField(n, t) for n, t in _RECORD_FIELDS))
        stored = self._stored_plan()
        if stored is None:
            mine = plan()
            self._run(f"INSERT INTO {self._sql(self.record_table)} (chunk, plan_id, read_at, plan) "
                      "VALUES (0, @plan_id, CURRENT_TIMESTAMP(), @plan)", plan_id=mine.identity,
                      plan=mine.to_text())
            stored = self._stored_plan()
            assert stored is not None
        self._plan = stored
        return stored, self.finished()

    def finished(self) -> frozenset[int]:
        """The chunks of this delivery's plan with a finished mark (another plan's never count)."""
        rows = self._run(f"SELECT chunk FROM {self._sql(self.record_table)} WHERE chunk > 0 "
                         "AND plan_id = @plan", plan=self._followed().identity)
        return frozenset(int(row["chunk"]) for row in rows)

    def chunk_staging(self, number: int) -> BigQueryStaging:
        """An ordinary delivery staging to load one chunk's parts into (its own run id); the first
        also prepares the destination and its heads row, the later ones are only created."""
        run_id = f"{self.run_id}-c{number}"
        if self._first is None:
            self._first = self.sink.open_staging(self.dest_table, self.columns, run_id, self.attempt, CATALOG)
            return self._first
        return self.sink.sibling_staging(self._first, run_id)

    def staged(self) -> tuple[int, datetime | None]:
        """Rows staged in this plan's finished chunks, and the earliest of their read times."""
        rows = self._run(f"SELECT COALESCE(SUM(rows_staged), 0) AS n, MIN(read_at) AS first "
                         f"FROM {self._sql(self.record_table)} WHERE chunk > 0 AND plan_id = @plan",
                         plan=self._followed().identity)
        first = rows[0]["first"] if rows else None
        return (int(rows[0]["n"]) if rows else 0), first

    def finish_chunk(self, number: int, loaded: Staging, read_at: datetime) -> None:
        """The chunk's loaded rows into the run's staging with its finished mark: one transaction."""
        if not isinstance(loaded, BigQueryStaging):
            raise TypeError(f"a chunk is loaded through this sink's staging, not {type(loaded).__name__}")
        script = stage_chunk_sql(self._sql(self.staging_table), self._sql(loaded.table_name),
                                 self._sql(self.record_table), [col.name for col in self.columns])
        self._run(script, chunk=number, plan=self._followed().identity, read_at=read_at,
                  rows=loaded.rows_loaded)
        log.info("run %s: chunk %d staged (%d rows)", self.run_id, number, loaded.rows_loaded)

    def final_staging(self, key: Iterable[str]) -> tuple[BigQueryStaging, int]:
        """A delivery staging of the run holding one row per key (the newest read); its row count.
        Refused (transient: the redelivery goes on with the stored plan) when this delivery's plan
        lost the race of two first deliveries, or a chunk of it is not finished."""
        plan = self._followed()
        winner = self._stored_plan()
        if winner is None or winner.identity != plan.identity:
            raise LoadError(f"run {self.run_id}: another delivery's chunk plan was stored first; "
                            "the redelivery reads that plan's chunks")
        if missing := unfinished(plan, sorted(self.finished())):
            raise LoadError(f"run {self.run_id}: chunks {[chunk.number for chunk in missing]} are not staged")
        staging = self.sink.open_staging(self.dest_table, self.columns, self.run_id, self.attempt, CATALOG)
        target = self.sink.target
        view = bigquery.Table(target.table_id(staging.table_name))
        names = [col.name for col in self.columns]
        view.view_query = final_rows_view_sql(self._sql(self.staging_table), names, list(key), plan.identity)
        target.client.delete_table(view.reference, retry=target.api_retry, not_found_ok=True)
        target.client.create_table(view, retry=target.api_retry)  # the staging table's name, as a view
        count = self._run(f"SELECT COUNT(*) AS n FROM {self._sql(staging.table_name)}")
        return staging, int(count[0]["n"])

    def drop(self) -> None:
        """After the final commit; a crash before leaves them to their expiration."""
        target = self.sink.target
        for table in (self.staging_table, self.record_table):
            target.client.delete_table(target.table_id(table), retry=target.api_retry, not_found_ok=True)

    # --- helpers ---------------------------------------------------------------------------------
    def _stored_plan(self) -> ChunkPlan | None:
        # Two first deliveries racing may both store a plan; the earliest (read_at, plan) wins for
        # every reader that comes after both. A delivery that read its own plan before the winner
        # was stored stages chunks under its own plan's identity: they are never counted, and its
        # final_staging refuses (a transient error), so the run commits one plan's chunks only.
        rows = self._run(f"SELECT plan FROM {self._sql(self.record_table)} WHERE chunk = 0 "
                         "ORDER BY read_at, plan LIMIT 1")
        return ChunkPlan.from_text(str(rows[0]["plan"])) if rows else None

    def _followed(self) -> ChunkPlan:
        if self._plan is None:
            raise RuntimeError("RunChunks.open() first: it fixes the plan this delivery follows")
        return self._plan

    def _create(self, name: str, fields: tuple[bigquery.SchemaField, ...]) -> None:
        target = self.sink.target
        table = bigquery.Table(target.table_id(name), schema=list(fields))
        # An abandoned run's tables expire like a delivery's (ETL_STAGING_EXPIRATION_S from creation).
        table.expires = datetime.now(UTC) + timedelta(seconds=self.sink.staging_expiration_s)
        table.description = f"ETL chunked catalog staging of run {self.run_id}; dropped after commit."
        target.client.create_table(table, exists_ok=True, retry=target.api_retry)

    def _sql(self, table: str) -> str:
        return self.sink.target.table_sql(table)

    def _run(self, text: str, **values: object) -> list[dict[str, Any]]:
        kinds = {int: "INT64", str: "STRING", datetime: "TIMESTAMP"}
        params = [bigquery.ScalarQueryParameter(name, kinds[type(value)], value)
                  for name, value in values.items()]
        target = self.sink.target
        text, params = emulator_compat.script_query(text, params, target.emulator)
        rows = target.retry.call(f"chunk tables of run {self.run_id}", target.rows, text, params)
        return [dict(row) for row in rows]


def load_parts(staging: BigQueryStaging, parts: Iterable[Path]) -> int:
    """Load spooled parts into a chunk's staging; the rows loaded."""
    return sum(staging.load_part(part) for part in parts)
