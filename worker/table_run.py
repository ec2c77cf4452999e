"""One table of a job's attempt: plan → extract and stage → verify → quality, then its ledger entry.

A `TableRun` reads its table in the job's source session (the snapshot every table of the job
shares) and stages it on its own; the runner (`worker/runner.py`) commits every table's entry in
one transaction. `Attempt` is what the tables of one attempt share.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from worker import quality, tracing
from worker.background import Background
from worker.cdc import meta as cdc_meta
from worker.cdc.lsn import format_lsn, parse_lsn
from worker.columns import Column
from worker.errors import RunTimeoutError, ShutdownInterrupted, SupersededError, VerificationError
from worker.events import Counters, RunEvents, SubWindowProgress
from worker.faults import crash_point, slow_point
from worker.ledger import LedgerEntry
from worker.messages import EtlRunRequest, TableSpec, utcnow
from worker.modes import mode_of
from worker.part_loader import BackgroundLoader
from worker.sinks.base import MergePlan, Sink, Staging
from worker.sources.base import ChangeLog, SourceTable
from worker.spool import PartWriter
from worker.sub_windows import Resume, sub_window_run_id
from worker.window import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    batch_rows: int
    part_rows: int
    incremental_lag_s: float
    max_run_s: float
    spool_dir: str | None = None
    cdc_wal_warning_bytes: int = 1 << 30  # a cdc slot retaining more WAL is reported
    chunk_rows: int = 0  # windows of more rows are committed in sub-windows (0: never)


@dataclass(frozen=True)
class Attempt:
    """What the tables of one attempt of a job share: the run, its events and its deadlines."""

    run_id: str
    request: EtlRunRequest
    options: RunOptions
    events: RunEvents
    interrupt: threading.Event
    tables: int = 1  # in the job

    @property
    def started_at(self) -> datetime:
        """When this delivery started (the events' clock origin), not this attempt."""
        return self.events.started_at

    @property
    def number(self) -> int:
        return self.events.attempt

    @property
    def spool_dir(self) -> Path | None:
        return Path(self.options.spool_dir) if self.options.spool_dir else None

    def check_deadlines(self) -> None:
        if self.interrupt.is_set():
            raise ShutdownInterrupted("worker is shutting down; the request will be redelivered")
        if self.events.elapsed_s > self.options.max_run_s:
            raise RunTimeoutError(f"run exceeded ETL_MAX_RUN_SECONDS={self.options.max_run_s:.0f}")


def qualified_source_table(schema: str | None, table: str) -> str:
    return f"{schema}.{table}" if schema else table


class TableRun:
    """The state of one table in one attempt of a job (a fresh object per attempt)."""

    def __init__(self, attempt: Attempt, index: int, spec: TableSpec, source: SourceTable,
                 counters: Counters) -> None:
        self.attempt = attempt
        self.index = index
        self.spec = spec
        self.source = source
        self.counters = counters
        self.source_table = qualified_source_table(attempt.request.schema_name, spec.source_table_name)
        self.window: Window | None = None
        self.expected_rows = 0
        self.merge: MergePlan | None = None
        self.expected_keys: int | None = None  # a reconciling merge: COUNT(*) of every key
        self._staging: Staging | None = None
        self.prep: Background[None] | None = None  # the thread opening it, when not opened in line
        self.values_nulled: dict[str, int] = {}  # per column, from the snapshot once read
        self.keys_extracted = self.keys_staged = 0  # a reconciling merge's source keys
        self.measures = quality.Measures()  # measured on every batch as it streams
        self.quality_warnings: list[str] = []
        self.violations: list[quality.Violation] = []
        self.log_warnings: list[str] = []  # a cdc slot retaining much WAL
        # A run read in sub-windows (worker/sub_window_run.py): what earlier deliveries committed,
        # and, on one sub-window's TableRun, its ledger identity and how its progress is reported.
        self.resume = Resume(())
        self.ledger_run_id = attempt.run_id
        self.sub_window_at: SubWindowProgress | None = None
        self.progress_base = Counters()  # rows of earlier sub-windows of this delivery

    @property
    def dest_table(self) -> str:
        return self.spec.dest_table_name

    @property
    def staging(self) -> Staging:
        """This table's staging; waits for its preparation (worker/background.py), raising its error."""
        if self.prep is not None:
            self.prep.result()
        assert self._staging is not None, "open_staging first"
        return self._staging

    # --- steps -----------------------------------------------------------------------------------
    @property
    def change_log(self) -> ChangeLog | None:
        """A cdc table's change log (None for the other modes)."""
        if mode_of(self.spec.load_type).reads != "log":
            return None
        assert isinstance(self.source, ChangeLog), "a cdc table is read by a change-log source"
        return self.source

    @property
    def staged_columns(self) -> tuple[Column, ...]:
        changes = self.change_log
        return changes.staged_columns if changes is not None else self.source.columns

    def plan(self, sink: Sink) -> None:
        """Window, row count (announced in run.started), merge plan and key count, all in the
        snapshot, before any table of the job streams."""
        changes = self.change_log
        window = self.window = self._plan_window(sink) if changes is None else _log_window(changes)
        self.expected_rows = self.source.count_rows(window)
        expected = None if self._reads_changes() else self.expected_rows  # a log range has no COUNT(*)
        self.attempt.events.started(
            self.attempt.request.source_type, self.source_table, window, expected,
            {col.source_name or col.name: col.name for col in self.source.columns}, table=self.dest_table)
        log.info("run %s: %d rows to read from %s%s", self.attempt.run_id, self.expected_rows,
                 self.source_table, _window_note(window))
        if window is not None and changes is None:
            self.measures.cursor = self.source.column(window.column).name
        self.merge = self._merge_plan()
        if changes is not None:
            crash_point("cdc_planned")  # a first run: its slot exists, nothing is read yet
            self._check_retained_wal(changes)
        if self.merge is not None and self.merge.reconcile:
            self.expected_keys = self.source.count_rows(None)

    def use_staging(self, staging: Staging) -> None:
        """A staging filled another way (a chunked catalog run's final one) as this table's."""
        self._staging = staging

    def open_staging(self, sink: Sink) -> None:
        self._staging = sink.open_staging(self.dest_table, self.source.columns, self.ledger_run_id,
                                          self.attempt.number, self.spec.load_type, self.merge)

    def stage(self, sink: Sink) -> None:
        """Rows (and a reconciling merge's keys) into staging, counts verified, rules checked."""
        with tracing.step("extract"):  # reading and spooling; the part loads are its children
            self.extract_and_stage()
        if self.expected_keys is not None:
            with tracing.step("keys"):
                self.stage_keys()
        with tracing.step("check"):
            self.verify()
            self.check_quality(sink)
        crash_point("table_staged")

    def sub_window(self, window: Window, at: SubWindowProgress) -> TableRun:
        """A TableRun for one sub-window of this table's window: its own counts, staging and
        ledger identity; its progress reported after this delivery's earlier sub-windows."""
        part = TableRun(self.attempt, self.index, self.spec, self.source, Counters())
        part.window, part.merge, part.sub_window_at = window, self.merge, at
        part.measures.cursor = self.measures.cursor
        part.expected_rows = self.source.count_rows(window)
        part.ledger_run_id = sub_window_run_id(self.attempt.run_id, window.low_key, window.high_key)
        part.progress_base = Counters(self.counters.rows_extracted, self.counters.rows_loaded,
                                      self.counters.batches_loaded)
        return part

    def extract_and_stage(self) -> None:
        nulled_before = self.source.values_nulled  # the source table's counts are cumulative
        with (
            PartWriter(self.staged_columns, part_rows=self.attempt.options.part_rows,
                       spool_dir=self.attempt.spool_dir) as parts,
            # Parts load on a background thread while extraction goes on (worker/part_loader.py).
            # The staging is looked up on the loader thread: it may still be in preparation.
            BackgroundLoader(lambda part: self.load(self.staging, part)) as loader,
        ):
            for batch in self.source.iter_batches(self.window, self.attempt.options.batch_rows):
                self.attempt.check_deadlines()
                self.counters.rows_extracted += batch.num_rows
                self.counters.batches_loaded += 1
                self.measures.add(batch if batch.num_columns == len(self.source.columns)
                                  else batch.select(range(len(self.source.columns))))
                crash_point("extraction_started")
                slow_point()
                for part in parts.write(batch):
                    loader.submit(part)
                self.attempt.events.progress(Counters.total((self.progress_base, self.counters)),
                                             table=self.dest_table, sub_window=self.sub_window_at)
            for part in parts.finish():
                loader.submit(part)
            loader.finish()
        self.values_nulled = {column: count - nulled_before.get(column, 0)
                              for column, count in self.source.values_nulled.items()
                              if count > nulled_before.get(column, 0)}

    def load(self, staging: Staging, part: Path) -> None:
        crash_point("part_written")
        with tracing.step("load"):
            self.counters.rows_loaded += staging.load_part(part)
        crash_point("staging_loaded")
        part.unlink(missing_ok=True)

    def stage_keys(self) -> None:
        """Every source key, from the same snapshot, into the staging's keys table (reconcile)."""
        with PartWriter(self.source.key_columns, part_rows=self.attempt.options.part_rows,
                        spool_dir=self.attempt.spool_dir) as parts:
            for batch in self.source.iter_keys(self.attempt.options.batch_rows):
                self.attempt.check_deadlines()
                self.keys_extracted += batch.num_rows
                for part in parts.write(batch):
                    self._load_keys(part)
            for part in parts.finish():
                self._load_keys(part)

    def _load_keys(self, part: Path) -> None:
        self.keys_staged += self.staging.load_keys_part(part)
        part.unlink(missing_ok=True)

    def verify(self) -> None:
        got = (self.counters.rows_extracted, self.counters.rows_loaded)
        expected = self.expected_rows if not self._reads_changes() else got[0]  # no COUNT(*) of changes
        if got != (expected, expected):
            raise VerificationError(
                f"row counts{self._of()} disagree: source COUNT(*) {expected}, extracted {got[0]}, "
                f"staged {got[1]}; nothing was committed"
            )
        keys = (self.keys_extracted, self.keys_staged)
        if self.expected_keys is not None and keys != (self.expected_keys, self.expected_keys):
            raise VerificationError(
                f"key counts{self._of()} disagree: source COUNT(*) {self.expected_keys}, read {keys[0]}, "
                f"staged {keys[1]}; nothing was committed"
            )

    def check_quality(self, sink: Sink) -> None:
        """The table's rules against what it measured (docs/quality.md): a `fail` raises
        DataQualityError before anything is committed; a `warn` is reported with the commit."""
        rules = self.spec.quality_rules
        if not rules:
            return
        bq_name = {col.source_name or col.name: col.name for col in self.source.columns}
        previous = None
        if any(rule.rule in ("max_row_count_change", "max_cursor_age_seconds") for rule in rules):
            previous = sink.last_commit(self.attempt.request.data_source_id, self.dest_table)
        unique = {tuple(bq_name[c] for c in rule.columns or ()) for rule in rules if rule.rule == "unique"}
        context = quality.Context(
            previous_rows=previous.rows_loaded if previous else None,
            previous_cursor_max=quality.previous_cursor_max(previous.quality if previous else None),
            now=self.source.snapshot_at, now_local=self.source.local_clock,
            duplicates={columns: self.staging.duplicate_count(columns) for columns in unique},
        )
        self.violations = quality.evaluate(rules, self.measures, context, bq_name)
        for violation in self.violations:
            log.warning("run %s, table %s: %s", self.attempt.run_id, self.dest_table, violation.describe())
        self.quality_warnings = quality.enforce(self.violations, self._named())

    def entry(self, completed_seq: int) -> LedgerEntry:
        """This table's ledger entry, committed with the job's other tables'."""
        window, request, counters = self.window, self.attempt.request, self.counters
        changes = self.change_log
        return LedgerEntry(
            run_id=self.attempt.run_id, data_source_id=request.data_source_id,
            etl_run_id=request.etl_run_id, dest_table=self.dest_table,
            load_type=self.spec.load_type, window_column=window.column if window else None,
            window_low=window.low_text if window else None,
            window_high=window.high_text if window else None,
            window_low_key=window.low_key if window else None,
            window_high_key=window.high_key if window else None,
            snapshot_at=self.source.snapshot_at,
            values_nulled=self.values_nulled,
            warnings=(*self.staging.warnings, *self.log_warnings, *self.quality_warnings),
            quality={**self.measures.report(), "violations": [v.report() for v in self.violations]},
            source_table=self.source_table,
            keys_extracted=self.keys_extracted if self.spec.reconcile_deletes else None,
            context=request.context,
            rows_extracted=counters.rows_extracted, rows_loaded=counters.rows_loaded,
            batches_loaded=counters.batches_loaded,
            source_row_count=None if self._reads_changes() else self.expected_rows,
            cdc=_cdc_report(changes) if changes is not None else None,
            attempt=self.attempt.number, completed_seq=completed_seq,
            staging_token=self.staging.token, started_at=self.attempt.started_at, committed_at=utcnow(),
            duration_seconds=round(self.attempt.events.elapsed_s, 3), table_index=self.index,
        )

    def confirm(self, entry: LedgerEntry) -> None:
        """After the commit: a cdc table's source may forget the changes before the position the
        ledger now holds (this delivery's, or a concurrent one's that won)."""
        changes = self.change_log
        if changes is None or entry.window_high is None:
            return
        crash_point("cdc_committed")  # committed in BigQuery, the slot not yet advanced
        try:
            changes.confirm(parse_lsn(entry.window_high))
        except Exception as exc:  # the run is committed: the next run advances the slot first
            log.warning("run %s: could not advance replication slot %s (the next run does): %s",
                        self.attempt.run_id, changes.log_range.slot, exc)

    def drop_staging(self) -> None:
        """Remove this table's staging (if opened); never masks the job's own outcome."""
        if self._staging is None:
            return
        try:
            self._staging.drop()
        except Exception as exc:  # the table expires anyway
            log.warning("could not drop staging table of %s: %s", self.dest_table, exc)

    # --- helpers ---------------------------------------------------------------------------------
    def _plan_window(self, sink: Sink) -> Window | None:
        if not mode_of(self.spec.load_type).windowed:
            return None
        committed_high = sink.last_window_high(self.attempt.request.data_source_id, self.dest_table)
        lows = [v for v in (self.spec.last_sync_value, committed_high) if v]
        if not lows and self.spec.historical_start_date:
            lows = [self.spec.historical_start_date]
        window = self.source.plan_window(lows, self.attempt.options.incremental_lag_s, self.resume.high)
        if self.resume.done and window.low_key != self.resume.low_key:
            # Another run of the table committed past this run's last sub-window: the rest of
            # this run's window is (partly) its; the sub-windows committed here stay.
            raise SupersededError(
                f"a later window of this table was committed after sub-window {len(self.resume.done)} "
                f"of run {self.attempt.run_id} (up to {self.resume.low}); the rest is not applied")
        return window

    def _reads_changes(self) -> bool:
        changes = self.change_log
        return changes is not None and not changes.log_range.snapshot

    def _check_retained_wal(self, changes: ChangeLog) -> None:
        retained = changes.report().get("retained_wal_bytes")
        limit = self.attempt.options.cdc_wal_warning_bytes
        if isinstance(retained, int) and retained > limit:
            warning = (f"replication slot {changes.log_range.slot} retains {retained / 2**20:.0f} MiB of WAL "
                       f"(more than ETL_CDC_WAL_WARNING_BYTES={limit}): run this table more often, or drop "
                       "the slot if the table is no longer loaded (docs/cdc.md)")
            log.warning("run %s: %s", self.attempt.run_id, warning)
            self.log_warnings.append(warning)

    def _merge_plan(self) -> MergePlan | None:
        """A merge table's key, cursor and delete rules, as BigQuery names (None for other modes)."""
        if not mode_of(self.spec.load_type).keyed:
            return None
        changes = self.change_log
        if changes is not None:  # the change order decides; a first run replaces the destination
            return MergePlan(key=tuple(col.name for col in self.source.key_columns), cursor=cdc_meta.SEQ,
                             empty_first=changes.log_range.snapshot)
        assert self.spec.timestamp_column is not None  # the request model requires it for merge
        soft = self.spec.soft_delete_column
        return MergePlan(
            key=tuple(col.name for col in self.source.key_columns),
            cursor=self.source.column(self.spec.timestamp_column).name,
            soft_delete=self.source.column(soft).name if soft else None,
            reconcile=self.spec.reconcile_deletes,
        )

    def _named(self) -> str | None:
        """The destination, in a job of several tables (its messages say which table)."""
        return self.dest_table if self.attempt.tables > 1 else None

    def _of(self) -> str:
        return f" of {self.dest_table}" if self.attempt.tables > 1 else ""


class LogWindow(Window):
    """A cdc run's range of the change log, its bounds printed as PostgreSQL prints LSNs."""

    @property
    def low_text(self) -> str | None:
        return None if not isinstance(self.low, int) else format_lsn(self.low)

    @property
    def high_text(self) -> str:
        return format_lsn(self.high) if isinstance(self.high, int) else str(self.high)


LOG_POSITION = "lsn"  # a cdc entry's window_column


def _log_window(changes: ChangeLog) -> Window:
    """The ledger's overlap guard sees a cdc run as the window [start, end) of LSNs."""
    return LogWindow(LOG_POSITION, changes.log_range.start, changes.log_range.end)


def _cdc_report(changes: ChangeLog) -> dict[str, object]:
    report = dict(changes.report())
    newest = report.get("newest_change_at")
    report["lag_seconds"] = (round((utcnow() - datetime.fromisoformat(newest)).total_seconds(), 3)
                             if isinstance(newest, str) else None)
    return report


def _window_note(window: Window | None) -> str:
    return f" in [{window.low_text}, {window.high_text})" if window else ""
