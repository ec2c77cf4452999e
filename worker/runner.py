"""A job's lifecycle as named steps: plan → extract and stage → verify → commit → report.

A job is N table runs (`worker/table_run.py`) that share one source snapshot and one commit
transaction; a one-table request is a job of one table. The runner is the only place that
sequences a job. It knows the Source and Sink protocols, not their implementations, and it raises
typed errors; the handler decides the message's fate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker import tracing
from worker.background import Background
from worker.catalog_chunk_run import CatalogChunkRun, chunked
from worker.errors import (
    EtlError,
    ExtractionError,
    RunIdConflictError,
    SourceConnectionError,
    SupersededError,
)
from worker.events import Counters, RunEvents
from worker.faults import crash_point
from worker.ledger import JobPurpose, LedgerEntry, RunPurpose
from worker.messages import EtlRunRequest
from worker.modes import mode_of
from worker.retry import RetryPolicy
from worker.sinks.base import Sink
from worker.sources.base import Source, SourceSession
from worker.sub_window_run import SubWindowedRun
from worker.sub_windows import Resume, resumable, resume_of
from worker.table_run import Attempt, RunOptions, TableRun, qualified_source_table

log = logging.getLogger(__name__)
MAX_REPLANS = 3  # a windowed job overtaken by concurrent runs plans its windows again

__all__ = ["MAX_REPLANS", "RunOptions", "RunResult", "Runner", "check_purpose", "request_purpose"]


@dataclass(frozen=True)
class RunResult:
    entries: tuple[LedgerEntry, ...]  # one per table of the job, in job order
    applied_now: bool  # False: an earlier delivery had already committed this run

    @property
    def entry(self) -> LedgerEntry:
        """The first table's entry (a one-table job's only one)."""
        return self.entries[0]


class Runner:
    def __init__(
        self,
        sink: Sink,
        sources: Callable[[str], Source],
        options: RunOptions,
        retry: RetryPolicy,
    ) -> None:
        self._sink = sink
        self._sources = sources
        self._options = options
        self._retry = retry

    def run(
        self,
        request: EtlRunRequest,
        run_id: str,
        events: RunEvents,
        interrupt: threading.Event | None = None,
    ) -> RunResult:
        """Apply the job exactly once, publishing its events; raise a typed error on failure."""
        existing = self._sink.find_job(run_id)
        if existing:
            check_purpose(existing, request, run_id)
            log.info("run %s already committed at %s: reporting it again", run_id, existing[0].committed_at)
            events.completed(*existing)
            return RunResult(existing, applied_now=False)
        interrupt = interrupt or threading.Event()

        def attempt() -> RunResult:  # a fresh snapshot, staging area and counters for every try
            return _JobAttempt(self, request, run_id, events, interrupt).execute()

        # The sink retries its own calls; here a whole attempt is retried when the SOURCE failed
        # transiently (connection refused or dropped mid-stream), which cannot be resumed in place.
        retried = self._retry.wrap("run", attempt, retry_if=_is_source_error)
        for replans_left in range(MAX_REPLANS, -1, -1):
            try:
                return retried()
            except SupersededError:
                # A concurrent run committed an overlapping window first: plan again from the
                # ledger's new high (windowed tables). An older catalog snapshot is simply not applied.
                if not _windowed(request) or not replans_left:
                    raise
                log.warning("run %s: window overtaken by a concurrent run; planning again", run_id)
        raise AssertionError("unreachable")


class _JobAttempt:
    """One attempt of one delivery of a job: its tables read in one session, applied in one commit."""

    def __init__(self, runner: Runner, request: EtlRunRequest, run_id: str, events: RunEvents,
                 interrupt: threading.Event) -> None:
        self.sink = runner._sink
        self.source = runner._sources(request.source_type)
        self.specs = request.table_specs()
        self.counters = events.attempt_counters(len(self.specs))
        self.attempt = Attempt(run_id, request, runner._options, events, interrupt,
                               tables=len(self.specs))

    def execute(self) -> RunResult:
        with self.source.session(self.attempt.request, self.log_from()) as session:
            with tracing.step("plan"):
                tables = self.plan(session)
            if self.sub_windowed(tables):
                entries, applied_now = SubWindowedRun(self.sink, tables[0]).execute()
                return RunResult(entries, applied_now)
            if chunked(self.specs, tables[0], self.attempt.options.chunk_rows):
                entries, applied_now = CatalogChunkRun(self.sink, tables[0]).execute()
                return RunResult(entries, applied_now)
            # Staging is prepared on a thread while the first table streams (worker/background.py).
            prep = Background(lambda: self.open_staging(tables), "staging-prep")
            try:
                for table in tables:
                    table.prep = prep
                for table in tables:  # one after the other: one stream per connection (MySQL)
                    with tracing.step("stage", dest_table=table.dest_table, load_type=table.spec.load_type):
                        table.stage(self.sink)
                with tracing.step("commit", tables=len(tables)):
                    entries = self.commit(tables)
                for table, entry in zip(tables, entries, strict=True):
                    table.confirm(entry)  # cdc: only now may the source forget the applied changes
            finally:
                prep.settle()  # nothing is dropped while it is still being made
                for table in tables:
                    table.drop_staging()
        with tracing.step("report"):
            return self.report(tables, entries)

    # --- steps -----------------------------------------------------------------------------------
    def log_from(self) -> str | None:
        """A cdc table's position as its last committed run recorded it (None: no such run)."""
        spec = self.specs[0]
        if mode_of(spec.load_type).reads != "log":
            return None
        return self.sink.last_log_position(self.attempt.request.data_source_id, spec.dest_table_name)

    def plan(self, session: SourceSession) -> list[TableRun]:
        """Every table reflected, planned and counted in the snapshot before any streams, and every
        destination checked (read only) before any is prepared or read: a refusal changes nothing,
        and it comes before the source's own errors while the staging is prepared on its thread."""
        tables = []
        for index, spec in enumerate(self.specs):
            table = TableRun(self.attempt, index, spec, session.table(spec), self.counters[index])
            if resumable(self.specs, self.attempt.options.chunk_rows):
                table.resume = self.resume()
            table.plan(self.sink)
            tables.append(table)
        for table in tables:
            self.sink.check_destination(table.dest_table, table.source.columns)
        return tables

    def resume(self) -> Resume:
        """What earlier deliveries (or tries) of this run committed in sub-windows, if any."""
        resume = resume_of(self.sink.find_sub_windows(self.attempt.run_id))
        if resume.done:
            check_purpose(resume.done[:1], self.attempt.request, self.attempt.run_id)
            log.info("run %s: %d sub-windows already committed (%d rows), going on from %s up to %s",
                     self.attempt.run_id, len(resume.done), resume.rows_committed, resume.low, resume.high)
        return resume

    def sub_windowed(self, tables: Sequence[TableRun]) -> bool:
        """A resumable run goes on in sub-windows once it has any, or when its window is too big."""
        if not resumable(self.specs, self.attempt.options.chunk_rows):
            return False
        return bool(tables[0].resume.done) or tables[0].expected_rows > self.attempt.options.chunk_rows

    def open_staging(self, tables: Sequence[TableRun]) -> None:
        for table in tables:
            table.open_staging(self.sink)

    def commit(self, tables: Sequence[TableRun]) -> tuple[LedgerEntry, ...]:
        events = self.attempt.events
        self.attempt.check_deadlines()
        events.progress(Counters.total(self.counters), phase="committing", force=True)
        completed_seq = events.reserve_seq()  # one run.completed for the job
        committed = [(table.staging, table.entry(completed_seq)) for table in tables]
        crash_point("before_commit")
        return self.sink.commit_job(committed)

    def report(self, tables: Sequence[TableRun], entries: tuple[LedgerEntry, ...]) -> RunResult:
        run_id = self.attempt.run_id
        applied_now = entries[0].staging_token == tables[0].staging.token
        if not applied_now:
            check_purpose(entries, self.attempt.request, run_id)
        log.info("run %s %s: %d rows in %d table(s) in %.1fs", run_id,
                 "committed" if applied_now else "was already committed",
                 sum(entry.rows_loaded for entry in entries), len(entries), entries[0].duration_seconds)
        crash_point("after_commit")
        self.attempt.events.completed(*entries)
        return RunResult(entries, applied_now)


def request_purpose(request: EtlRunRequest) -> JobPurpose:
    schema = request.schema_name
    return JobPurpose.of(
        RunPurpose(request.data_source_id, qualified_source_table(schema, spec.source_table_name),
                   spec.dest_table_name, spec.load_type)
        for spec in request.table_specs())


def check_purpose(entries: Sequence[LedgerEntry], request: EtlRunRequest, run_id: str) -> None:
    """Ledger entries under this run id count as this request's commit only if they moved the
    same tables the same way; otherwise the id was reused (a Django database reset, two
    environments sharing a dataset) and reporting the old run's result would silently lose this one."""
    wanted, committed = request_purpose(request), JobPurpose.of_entries(entries)
    if committed.matches(wanted):
        return
    raise RunIdConflictError(
        f"run id {run_id} is already used by a committed run of {committed.describe()} "
        f"(committed at {entries[0].committed_at.isoformat()}); this request ({wanted.describe()}) was "
        "not loaded: give every run its own etl_run_id"
    )


def _windowed(request: EtlRunRequest) -> bool:
    """Windows (and cdc ranges) start where the ledger ends: planning again may succeed."""
    return any(mode_of(spec.load_type).reads in ("window", "log") for spec in request.table_specs())


def _is_source_error(error: EtlError) -> bool:
    return isinstance(error, (SourceConnectionError, ExtractionError))
