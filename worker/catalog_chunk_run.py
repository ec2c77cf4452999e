"""A big catalog run read in key chunks that survive a failure (worker/catalog_chunks.py has the
plan and the final-commit rule, worker/sinks/bigquery_chunks.py the run's own tables).

The runner hands a planned one-table catalog run here when its table has a key and holds more
than ETL_CHUNK_ROWS rows (`chunked`). The run's first delivery finds the chunk bounds in its
snapshot and stores them as the run's plan; every delivery reads the plan's chunks that have no
finished mark yet, each counted and read in one snapshot, loads its parts straight into the run's
staging (each row naming its try) and makes the try count with one mark row once its rows are
counted there. Once every chunk is finished, a view of the marked tries' rows (one per key: the
chunks are disjoint key ranges) is the delivery staging that the ordinary catalog commit applies
with the ledger row in one transaction; then the run's tables are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from worker import tracing
from worker.catalog_chunks import Chunk, ChunkPlan, KeyValue, plan_of, unfinished
from worker.constants import CATALOG
from worker.errors import VerificationError
from worker.events import ChunkProgress, Counters
from worker.faults import crash_point, slow_point
from worker.ledger import LedgerEntry
from worker.messages import TableSpec
from worker.part_loader import BackgroundLoader
from worker.sinks.base import RunChunkStore, Sink, StagedChunks, Staging
from worker.sources.base import KeyChunked, KeyRange, RangeRead
from worker.spool import PartWriter
from worker.table_run import TableRun

log = logging.getLogger(__name__)


def chunked(specs: Sequence[TableSpec], table: TableRun, chunk_rows: int) -> bool:
    """Whether a planned run is read in key chunks: a one-table catalog run without quality rules
    (they judge one read of the whole table) whose table has a loaded key and more than
    `chunk_rows` rows. Anything else keeps the unchunked path, unchanged."""
    if chunk_rows < 1 or len(specs) != 1:
        return False
    spec, source = specs[0], table.source
    if spec.load_type != CATALOG or spec.quality_rules or not isinstance(source, KeyChunked):
        return False
    loaded = {col.source_name or col.name for col in source.columns}
    key = source.chunk_key
    return bool(key) and set(key) <= loaded and table.expected_rows > chunk_rows


class _OpenChunk:
    """One chunk this delivery is reading: its delivery staging, its spool and its part loader."""

    def __init__(self, run: CatalogChunkRun, store: RunChunkStore, chunk: Chunk, read_at: datetime) -> None:
        self.chunk = chunk
        self.rows_read = 0
        self._run = run
        self._closing = contextlib.ExitStack()
        self.loads = store.chunk_loader(chunk.number, read_at)  # a try: it counts once marked
        attempt = run.table.attempt
        self._parts = self._closing.enter_context(PartWriter(
            self.loads.columns, part_rows=attempt.options.part_rows, spool_dir=attempt.spool_dir))
        self._loader = self._closing.enter_context(BackgroundLoader(self._load))

    def write(self, batch: pa.RecordBatch) -> None:
        for part in self._parts.write(self.loads.marked(batch)):
            self._loader.submit(part)

    def finish(self) -> None:
        for part in self._parts.finish():
            self._loader.submit(part)
        self._loader.finish()

    def close(self) -> None:
        self._closing.close()

    def _load(self, part: Path) -> None:
        crash_point("part_written")
        with tracing.step("load"):
            self.loads.load_part(part)  # its rows are counted in the run's staging once all are in
        crash_point("staging_loaded")
        part.unlink(missing_ok=True)


class CatalogChunkRun:
    def __init__(self, sink: Sink, table: TableRun) -> None:
        self.sink = sink
        self.table = table  # planned: counted, run.started published
        source = table.source
        assert isinstance(source, KeyChunked), "chunked() chose this run"
        self.source: KeyChunked = source
        self._base = Counters()  # rows of chunks finished by earlier deliveries or tries

    def execute(self) -> tuple[tuple[LedgerEntry, ...], bool]:
        """Read the chunks not yet finished, then commit the run; return its entry in force and
        whether this delivery committed it."""
        table, started = self.table, time.monotonic()
        store = self.sink.run_chunks(table.attempt.run_id, table.dest_table, table.source.columns,
                                     table.attempt.number)
        plan, finished = store.open(self._new_plan)
        todo = unfinished(plan, sorted(finished))
        rows_before = store.staged().rows
        self._base = Counters(rows_before, rows_before, 0)
        log.info("run %s: %d key chunks, %d finished earlier (%d rows), %d to read", table.attempt.run_id,
                 len(plan.chunks()), len(finished), rows_before, len(todo))
        with tracing.step("stage", dest_table=table.dest_table, load_type=table.spec.load_type):
            self._read(store, plan, todo)
        log.info("run %s: every chunk staged (%.1fs)", table.attempt.run_id, time.monotonic() - started)
        with tracing.step("commit", tables=1):
            entry, token = self._commit(store)
        with tracing.step("report"):
            return self._report(store, entry, token)

    # --- steps -----------------------------------------------------------------------------------
    def _new_plan(self) -> ChunkPlan:
        """Only the run's first delivery: the bounds, in its snapshot."""
        rows = self.table.attempt.options.chunk_rows
        return plan_of(self.source.chunk_key, self.source.key_split_points(rows))

    def _read(self, store: RunChunkStore, plan: ChunkPlan, todo: Sequence[Chunk]) -> None:
        """Every chunk of `todo` read, loaded and finished; chunks read in parallel interleave."""
        ranges: list[KeyRange] = [(self._bound(chunk.low), self._bound(chunk.high)) for chunk in todo]
        reading: dict[int, _OpenChunk] = {}
        progress_of = {chunk.number: ChunkProgress(chunk.number, len(plan.chunks())) for chunk in todo}
        try:
            for item in self.source.read_key_ranges(ranges, self.table.attempt.options.batch_rows):
                self.table.attempt.check_deadlines()
                chunk = todo[item.index]
                current = reading.get(item.index) or reading.setdefault(
                    item.index, _OpenChunk(self, store, chunk, item.read_at))
                if item.batch is None:
                    self._finish(store, reading.pop(item.index), item)
                    continue
                self._add(current, item)
                self.table.attempt.events.progress(Counters.total((self._base, self.table.counters)),
                                                   table=self.table.dest_table,
                                                   sub_window=progress_of[chunk.number])
        finally:
            for left in reading.values():
                left.close()

    def _add(self, current: _OpenChunk, item: RangeRead) -> None:
        assert item.batch is not None
        counters = self.table.counters
        counters.rows_extracted += item.batch.num_rows
        counters.batches_loaded += 1
        current.rows_read += item.batch.num_rows
        crash_point("extraction_started")
        slow_point()
        current.write(item.batch)

    def _finish(self, store: RunChunkStore, current: _OpenChunk, item: RangeRead) -> None:
        """A chunk read whole: its parts loaded, its counts verified, then durable with its mark."""
        try:
            current.finish()
            number = current.chunk.number
            got = (current.rows_read, store.staged_rows(current.loads))
            if got != (item.rows_counted, item.rows_counted):
                raise VerificationError(
                    f"row counts of chunk {number} disagree: source COUNT(*) {item.rows_counted}, "
                    f"extracted {got[0]}, staged {got[1]}; nothing was committed")
            crash_point("chunk_loaded")
            store.finish_chunk(number, current.loads, got[1], item.nulled)
            self.table.counters.rows_loaded += got[1]
            crash_point("chunk_finished")
        finally:
            current.close()

    def _commit(self, store: RunChunkStore) -> tuple[LedgerEntry, str]:
        """The run's staged rows, one per key, applied by the ordinary catalog commit."""
        table, attempt = self.table, self.table.attempt
        final, staged = store.final_staging()
        table.use_staging(final)
        try:
            table.values_nulled = dict(staged.values_nulled)  # every finished chunk's, by any delivery
            attempt.check_deadlines()
            attempt.events.progress(Counters.total((self._base, table.counters)), phase="committing",
                                    force=True)
            entry = _run_entry(table.entry(attempt.events.reserve_seq()), staged)
            crash_point("before_commit")
            (in_force,) = self.sink.commit_job([(final, entry)])
        finally:
            self.drop_quietly(final)
        return in_force, final.token

    def _report(self, store: RunChunkStore, entry: LedgerEntry, token: str
                ) -> tuple[tuple[LedgerEntry, ...], bool]:
        attempt = self.table.attempt
        applied_now = entry.staging_token == token
        try:
            store.drop()
        except Exception as exc:  # they expire anyway
            log.warning("run %s: could not drop its chunk tables: %s", attempt.run_id, exc)
        log.info("run %s %s in key chunks: %d rows in %.1fs", attempt.run_id,
                 "committed" if applied_now else "was already committed", entry.rows_loaded,
                 entry.duration_seconds)
        crash_point("after_commit")
        attempt.events.completed(entry)
        return (entry,), applied_now

    # --- helpers ---------------------------------------------------------------------------------
    def _bound(self, value: KeyValue | None) -> KeyValue | None:
        """A stored bound in its key columns' types (the plan holds their JSON form)."""
        return None if value is None else self.source.key_bound(value)

    @staticmethod
    def drop_quietly(staging: Staging) -> None:
        try:
            staging.drop()
        except Exception as exc:  # it expires anyway
            log.warning("could not drop a chunk staging table: %s", exc)


def _run_entry(entry: LedgerEntry, staged: StagedChunks) -> LedgerEntry:
    """The run's entry: every chunk's rows (staged, counted and checked against the final staging,
    by any delivery; the chunks are disjoint key ranges, so the destination holds exactly those),
    and the first chunk's read time as its snapshot (the catalog commits' order). This delivery's
    measures are not the run's: no quality report."""
    return dataclasses.replace(
        entry, rows_extracted=staged.rows, rows_loaded=staged.rows, source_row_count=staged.rows,
        snapshot_at=staged.first_read_at or entry.snapshot_at, quality=None)
