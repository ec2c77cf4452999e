"""A run's lifecycle as named steps: plan → extract and stage → verify → commit → report.

The runner is the only place that sequences a run. It knows the Source and Sink protocols, not
their implementations, and it raises typed errors; the handler decides the message's fate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from worker import quality
from worker.errors import (
    EtlError,
    ExtractionError,
    RunIdConflictError,
    RunTimeoutError,
    ShutdownInterrupted,
    SourceConnectionError,
    SupersededError,
    VerificationError,
)
from worker.events import RunEvents
from worker.faults import crash_point, slow_point
from worker.ledger import LedgerEntry, RunPurpose
from worker.messages import EtlRunRequest, utcnow
from worker.modes import mode_of
from worker.part_loader import BackgroundLoader
from worker.retry import RetryPolicy
from worker.sinks.base import MergePlan, Sink, Staging
from worker.sources.base import Source, SourceSnapshot
from worker.spool import PartWriter
from worker.window import Window

log = logging.getLogger(__name__)
MAX_REPLANS = 3  # a transactional run overtaken by concurrent runs plans its window again


@dataclass(frozen=True)
class RunOptions:
    batch_rows: int
    part_rows: int
    incremental_lag_s: float
    max_run_s: float
    spool_dir: str | None = None


@dataclass(frozen=True)
class RunResult:
    entry: LedgerEntry
    applied_now: bool  # False: an earlier delivery had already committed this run


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
        """Apply the run exactly once, publishing its events; raise a typed error on failure."""
        existing = self._sink.find_commit(run_id)
        if existing is not None:
            check_purpose(existing, request, run_id)
            log.info("run %s already committed at %s: reporting it again", run_id, existing.committed_at)
            events.completed(existing)
            return RunResult(existing, applied_now=False)
        interrupt = interrupt or threading.Event()

        def attempt() -> RunResult:  # a fresh staging area and counters for every try
            return _RunAttempt(self, request, run_id, events, interrupt).execute()

        # The sink retries its own calls; here a whole attempt is retried when the SOURCE failed
        # transiently (connection refused or dropped mid-stream), which cannot be resumed in place.
        retried = self._retry.wrap("run", attempt, retry_if=_is_source_error)
        for replans_left in range(MAX_REPLANS, -1, -1):
            try:
                return retried()
            except SupersededError:
                # A concurrent run committed an overlapping window first: plan again from the
                # ledger's new high (transactional). An older catalog snapshot is simply not applied.
                if not mode_of(request.load_type).windowed or not replans_left:
                    raise
                log.warning("run %s: window overtaken by a concurrent run; planning again", run_id)
        raise AssertionError("unreachable")


class _RunAttempt:
    """The state of one delivery of one run (a fresh object per delivery)."""

    def __init__(
        self,
        runner: Runner,
        request: EtlRunRequest,
        run_id: str,
        events: RunEvents,
        interrupt: threading.Event,
    ) -> None:
        self.sink = runner._sink
        self.source = runner._sources(request.source_type)
        self.options = runner._options
        self.request = request
        self.run_id = run_id
        self.events = events
        self.interrupt = interrupt
        self.counters = events.attempt_counters()
        self.started_at = utcnow()
        self.attempt = events.attempt
        self.window: Window | None = None
        self.snapshot_at: datetime | None = None
        self.values_nulled: dict[str, int] = {}  # per column, from the snapshot once read
        self.keys_extracted = self.keys_staged = 0  # a reconciling merge's source keys
        self.measures = quality.Measures()  # measured on every batch as it streams
        self.quality_warnings: list[str] = []
        self.violations: list[quality.Violation] = []

    def execute(self) -> RunResult:
        with self.source.snapshot(self.request) as snapshot:
            self.snapshot_at = snapshot.snapshot_at
            window = self.window = self.plan(snapshot)
            expected_rows = snapshot.count_rows(window)
            self.events.started(self.request.source_type, self._source_table(), window, expected_rows,
                                {col.source_name or col.name: col.name for col in snapshot.columns})
            log.info("run %s: %d rows to read%s", self.run_id, expected_rows, _window_note(window))
            if self.window is not None:
                self.measures.cursor = snapshot.column(self.window.column).name
            merge = self.merge_plan(snapshot)
            expected_keys = snapshot.count_rows(None) if merge is not None and merge.reconcile else None
            staging = self.sink.open_staging(self.request.dest_table_name, snapshot.columns,
                                             self.run_id, self.attempt, self.request.load_type, merge)
            try:
                self.extract_and_stage(snapshot, staging)
                if expected_keys is not None:
                    self.stage_keys(snapshot, staging)
                self.verify(expected_rows, expected_keys)
                self.check_quality(snapshot, staging)
                entry = self.commit(staging, window, expected_rows)
            finally:
                _drop_quietly(staging)
        applied_now = entry.staging_token == staging.token
        if not applied_now:
            check_purpose(entry, self.request, self.run_id)
        log.info("run %s %s: %d rows in %.1fs", self.run_id,
                 "committed" if applied_now else "was already committed", entry.rows_loaded,
                 entry.duration_seconds)
        crash_point("after_commit")
        self.events.completed(entry)
        return RunResult(entry, applied_now)

    # --- steps -----------------------------------------------------------------------------------
    def plan(self, snapshot: SourceSnapshot) -> Window | None:
        if not mode_of(self.request.load_type).windowed:
            return None
        committed_high = self.sink.last_window_high(
            self.request.data_source_id, self.request.dest_table_name)
        lows = [v for v in (self.request.last_sync_value, committed_high) if v]
        if not lows and self.request.historical_start_date:
            lows = [self.request.historical_start_date]
        return snapshot.plan_window(lows, self.options.incremental_lag_s)

    def merge_plan(self, snapshot: SourceSnapshot) -> MergePlan | None:
        """A merge run's key, cursor and delete rules, as BigQuery names (None for other modes)."""
        if not mode_of(self.request.load_type).keyed:
            return None
        assert self.request.timestamp_column is not None  # the request model requires it for merge
        soft = self.request.soft_delete_column
        return MergePlan(
            key=tuple(col.name for col in snapshot.key_columns),
            cursor=snapshot.column(self.request.timestamp_column).name,
            soft_delete=snapshot.column(soft).name if soft else None,
            reconcile=self.request.reconcile_deletes,
        )

    def stage_keys(self, snapshot: SourceSnapshot, staging: Staging) -> None:
        """Every source key, from the same snapshot, into the staging's keys table (reconcile)."""
        spool_dir = Path(self.options.spool_dir) if self.options.spool_dir else None
        with PartWriter(snapshot.key_columns, part_rows=self.options.part_rows, spool_dir=spool_dir) as parts:
            for batch in snapshot.iter_keys(self.options.batch_rows):
                self.check_deadlines()
                self.keys_extracted += batch.num_rows
                for part in parts.write(batch):
                    self.keys_staged += staging.load_keys_part(part)
                    part.unlink(missing_ok=True)
            for part in parts.finish():
                self.keys_staged += staging.load_keys_part(part)
                part.unlink(missing_ok=True)

    def extract_and_stage(self, snapshot: SourceSnapshot, staging: Staging) -> None:
        spool_dir = Path(self.options.spool_dir) if self.options.spool_dir else None
        with (
            PartWriter(snapshot.columns, part_rows=self.options.part_rows, spool_dir=spool_dir) as parts,
            # Parts load on a background thread while extraction goes on (worker/part_loader.py).
            BackgroundLoader(partial(self.load, staging)) as loader,
        ):
            for batch in snapshot.iter_batches(self.window, self.options.batch_rows):
                self.check_deadlines()
                self.counters.rows_extracted += batch.num_rows
                self.counters.batches_loaded += 1
                self.measures.add(batch)
                crash_point("extraction_started")
                slow_point()
                for part in parts.write(batch):
                    loader.submit(part)
                self.events.progress(self.counters)
            for part in parts.finish():
                loader.submit(part)
            loader.finish()
        self.values_nulled = snapshot.values_nulled

    def load(self, staging: Staging, part: Path) -> None:
        crash_point("part_written")
        self.counters.rows_loaded += staging.load_part(part)
        crash_point("staging_loaded")
        part.unlink(missing_ok=True)

    def verify(self, expected_rows: int, expected_keys: int | None = None) -> None:
        got = (self.counters.rows_extracted, self.counters.rows_loaded)
        if got != (expected_rows, expected_rows):
            raise VerificationError(
                f"row counts disagree: source COUNT(*) {expected_rows}, extracted {got[0]}, "
                f"staged {got[1]}; nothing was committed"
            )
        keys = (self.keys_extracted, self.keys_staged)
        if expected_keys is not None and keys != (expected_keys, expected_keys):
            raise VerificationError(
                f"key counts disagree: source COUNT(*) {expected_keys}, read {keys[0]}, staged "
                f"{keys[1]}; nothing was committed"
            )

    def check_quality(self, snapshot: SourceSnapshot, staging: Staging) -> None:
        """The request's rules against what the run measured (docs/quality.md): a `fail` raises
        DataQualityError before anything is committed; a `warn` is reported with the commit."""
        rules = self.request.quality_rules
        if not rules:
            return
        bq_name = {col.source_name or col.name: col.name for col in snapshot.columns}
        previous = None
        if any(rule.rule in ("max_row_count_change", "max_cursor_age_seconds") for rule in rules):
            previous = self.sink.last_commit(self.request.data_source_id, self.request.dest_table_name)
        unique = {tuple(bq_name[c] for c in rule.columns or ()) for rule in rules if rule.rule == "unique"}
        context = quality.Context(
            previous_rows=previous.rows_loaded if previous else None,
            previous_cursor_max=quality.previous_cursor_max(previous.quality if previous else None),
            now=snapshot.snapshot_at, now_local=snapshot.local_clock,
            duplicates={columns: staging.duplicate_count(columns) for columns in unique},
        )
        self.violations = quality.evaluate(rules, self.measures, context, bq_name)
        for violation in self.violations:
            log.warning("run %s: %s", self.run_id, violation.describe())
        self.quality_warnings = quality.enforce(self.violations)

    def commit(self, staging: Staging, window: Window | None, expected_rows: int) -> LedgerEntry:
        self.check_deadlines()
        self.events.progress(self.counters, phase="committing", force=True)
        entry = LedgerEntry(
            run_id=self.run_id, data_source_id=self.request.data_source_id,
            etl_run_id=self.request.etl_run_id, dest_table=self.request.dest_table_name,
            load_type=self.request.load_type, window_column=window.column if window else None,
            window_low=window.low_text if window else None,
            window_high=window.high_text if window else None,
            window_low_key=window.low_key if window else None,
            window_high_key=window.high_key if window else None,
            snapshot_at=self.snapshot_at,
            values_nulled=self.values_nulled, warnings=(*staging.warnings, *self.quality_warnings),
            quality={**self.measures.report(), "violations": [v.report() for v in self.violations]},
            source_table=self._source_table(),
            keys_extracted=self.keys_extracted if self.request.reconcile_deletes else None,
            context=self.request.context,
            rows_extracted=self.counters.rows_extracted, rows_loaded=self.counters.rows_loaded,
            batches_loaded=self.counters.batches_loaded, source_row_count=expected_rows,
            attempt=self.attempt, completed_seq=self.events.reserve_seq(),
            staging_token=staging.token, started_at=self.started_at, committed_at=utcnow(),
            duration_seconds=round(self.events.elapsed_s, 3),
        )
        crash_point("before_commit")
        return staging.commit(entry)

    def check_deadlines(self) -> None:
        if self.interrupt.is_set():
            raise ShutdownInterrupted("worker is shutting down; the request will be redelivered")
        if self.events.elapsed_s > self.options.max_run_s:
            raise RunTimeoutError(f"run exceeded ETL_MAX_RUN_SECONDS={self.options.max_run_s:.0f}")

    # --- helpers ---------------------------------------------------------------------------------
    def _source_table(self) -> str:
        return qualified_source_table(self.request)


def request_purpose(request: EtlRunRequest) -> RunPurpose:
    return RunPurpose(request.data_source_id, qualified_source_table(request), request.dest_table_name,
                      request.load_type)


def qualified_source_table(request: EtlRunRequest) -> str:
    schema = request.schema_name
    return f"{schema}.{request.source_table_name}" if schema else request.source_table_name


def check_purpose(entry: LedgerEntry, request: EtlRunRequest, run_id: str) -> None:
    """A ledger entry under this run id counts as this request's commit only if it moved the same
    table the same way; otherwise the id was reused (a Django database reset, two environments
    sharing a dataset) and reporting the old run's result would silently lose this one."""
    wanted = request_purpose(request)
    if entry.purpose().matches(wanted):
        return
    raise RunIdConflictError(
        f"run id {run_id} is already used by a committed run of {entry.purpose().describe()} "
        f"(committed at {entry.committed_at.isoformat()}); this request ({wanted.describe()}) was "
        "not loaded: give every run its own etl_run_id"
    )


def _is_source_error(error: EtlError) -> bool:
    return isinstance(error, (SourceConnectionError, ExtractionError))


def _window_note(window: Window | None) -> str:
    return f" in [{window.low_text}, {window.high_text})" if window else ""


def _drop_quietly(staging: Staging) -> None:
    try:
        staging.drop()
    except Exception as exc:  # the table expires anyway; never mask the run's own outcome
        log.warning("could not drop staging table: %s", exc)

