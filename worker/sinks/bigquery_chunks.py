"""A chunked catalog run's own tables in BigQuery (worker/catalog_chunks.py has the rules).

`RunChunks` is the run's staging (every try of every chunk: the rows, each with its chunk
number, plan identity, read time and try) and its chunk record (the plan as row 0, then one mark
per finished try of a chunk). A chunk's parts are loaded straight into the run's staging (the
sink's loads, job ids and retries, under the try's own token); its mark, written once every part
is loaded and counted, is what makes those rows count. `final_staging` is an ordinary delivery
staging of the run whose table is a VIEW of the marked tries' rows, which the ordinary catalog
commit (`Sink.commit_job`) then applies with the ledger row, in one transaction: the rows are
loaded once and copied once, into the destination.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from worker.catalog_chunks import (
    CHUNK_COLUMN,
    PLAN_COLUMN,
    READ_AT_COLUMN,
    TRY_COLUMN,
    ChunkPlan,
    chunk_record_name,
    final_rows_view_sql,
    mark_chunk_sql,
    marks_sql,
    run_staging_name,
    unfinished,
)
from worker.columns import Column, arrow_schema
from worker.constants import CATALOG
from worker.errors import LoadError
from worker.sinks import bigquery_schema as schema
from worker.sinks import emulator_compat
from worker.sinks.base import ChunkLoad, StagedChunks
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging

log = logging.getLogger(__name__)
_RECORD_FIELDS = (("chunk", "INT64"), ("plan_id", "STRING"), ("try_token", "STRING"),
                  ("rows_staged", "INT64"), ("read_at", "TIMESTAMP"), ("plan", "STRING"),
                  ("values_nulled", "STRING"))  # the try's {column: count} as JSON
# The columns every staged row carries after its own (catalog_chunks.MARK_COLUMNS, in that order).
_MARKS = (Column(CHUNK_COLUMN, "chunk", pa.int64(), "INT64"),
          Column(PLAN_COLUMN, "plan", pa.string(), "STRING"),
          Column(READ_AT_COLUMN, "read_at", pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
          Column(TRY_COLUMN, "try", pa.string(), "STRING"))


@dataclass
class RunChunkLoad:
    """One try of one chunk: its parts loaded straight into the run's staging (`load_part`), each
    batch with the chunk's marks (`marked`); it counts once `RunChunks.finish_chunk` marks it."""

    staging: BigQueryStaging  # loads into the run's staging table under this try's token
    number: int
    plan_id: str
    read_at: datetime

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns of its parts: the rows' own, then the marks."""
        return self.staging.columns

    @property
    def token(self) -> str:
        return self.staging.token

    def marked(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        size = batch.num_rows
        marks = [pa.repeat(pa.scalar(value, col.arrow_type), size) for value, col in
                 zip((self.number, self.plan_id, self.read_at, self.token), _MARKS, strict=True)]
        return pa.RecordBatch.from_arrays([*batch.columns, *marks], schema=arrow_schema(self.columns))

    def load_part(self, path: Path) -> int:
        return self.staging.load_part(path)


@dataclass
class RunChunks:
    sink: BigQuerySink
    run_id: str
    dest_table: str
    columns: tuple[Column, ...]
    attempt: int
    _plan: ChunkPlan | None = field(default=None, init=False)  # the one this delivery follows

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
        self._create(self.staging_table, tuple(schema.schema_fields((*self.columns, *_MARKS), staging=True)))
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
        rows = self._run(f"SELECT DISTINCT chunk FROM {self._sql(self.record_table)} WHERE chunk > 0 "
                         "AND plan_id = @plan", plan=self._followed().identity)
        return frozenset(int(row["chunk"]) for row in rows)

    def chunk_loader(self, number: int, read_at: datetime) -> RunChunkLoad:
        """A new try of chunk `number` (read in a snapshot opened at `read_at`), loading into the
        run's staging under its own token; nothing is created."""
        loads = self.sink.appending_staging(self.staging_table, (*self.columns, *_MARKS), self.dest_table,
                                            f"{self.run_id}-c{number}", self.attempt)
        return RunChunkLoad(loads, number, self._followed().identity, read_at)

    def staged(self) -> StagedChunks:
        """What this plan's finished chunks (their marked tries) hold: one read of the marks."""
        marks = marks_sql(self._sql(self.record_table))
        rows, first, nulled = 0, None, dict[str, int]()
        for mark in self._run(f"SELECT rows_staged, read_at, values_nulled FROM ({marks})",
                              plan=self._followed().identity):
            rows += int(mark["rows_staged"])
            first = mark["read_at"] if first is None else min(first, mark["read_at"])
            for column, count in json.loads(mark["values_nulled"] or "{}").items():
                nulled[column] = nulled.get(column, 0) + int(count)
        return StagedChunks(rows, first, nulled)

    def staged_rows(self, loaded: ChunkLoad) -> int:
        """The try's rows in the run's staging, counted there: a load job's own count cannot be
        used (bqemulator reports the table's total after an append, emulator_compat)."""
        rows = self._run(f"SELECT COUNT(*) AS n FROM {self._sql(self.staging_table)} "
                         f"WHERE `{TRY_COLUMN}` = @try", **{"try": self._own(loaded).token})
        return int(rows[0]["n"])

    def finish_chunk(self, number: int, loaded: ChunkLoad, rows: int,
                     nulled: Mapping[str, int] | None = None) -> None:
        """Mark the try finished: its `rows`, all loaded and counted, count from now on, and so do
        its values BigQuery could not hold (`nulled`, per column)."""
        mine = self._own(loaded)
        self._run(mark_chunk_sql(self._sql(self.record_table)), chunk=number, plan=self._followed().identity,
                  read_at=mine.read_at, rows=rows, nulled=json.dumps(dict(nulled or {}), sort_keys=True),
                  **{"try": mine.token})
        log.info("run %s: chunk %d staged (%d rows)", self.run_id, number, rows)

    def final_staging(self) -> tuple[BigQueryStaging, StagedChunks]:
        """A delivery staging of the run whose table is a view of the finished chunks' rows; its
        row count, checked against the marks. Refused (transient: the redelivery goes on with the
        stored plan) when this delivery's plan lost the race of two first deliveries, or a chunk of
        it is not finished."""
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
        view.view_query = final_rows_view_sql(self._sql(self.staging_table), self._sql(self.record_table),
                                              names, plan.identity)
        view.expires = datetime.now(UTC) + timedelta(seconds=self.sink.staging_expiration_s)  # as a staging
        target.client.delete_table(view.reference, retry=target.api_retry, not_found_ok=True)
        target.client.create_table(view, retry=target.api_retry)  # the staging table's name, as a view
        count = int(self._run(f"SELECT COUNT(*) AS n FROM {self._sql(staging.table_name)}")[0]["n"])
        marked = self.staged()
        if count != marked.rows:
            raise LoadError(f"run {self.run_id}: the finished chunks hold {count} rows, their marks "
                            f"{marked.rows}")
        return staging, marked

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

    @staticmethod
    def _own(loaded: ChunkLoad) -> RunChunkLoad:
        if not isinstance(loaded, RunChunkLoad):
            raise TypeError(f"a chunk is loaded by this run's chunk_loader, not {type(loaded).__name__}")
        return loaded

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


def load_parts(staging: RunChunkLoad | BigQueryStaging, parts: Iterable[Path]) -> int:
    """Load spooled parts into a chunk's staging; the rows loaded."""
    return sum(staging.load_part(part) for part in parts)
