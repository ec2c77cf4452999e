"""One table's window committed as consecutive sub-windows (worker/sub_windows.py has the rules).

The runner hands a planned one-table run here when its window holds more than ETL_CHUNK_ROWS rows,
or when earlier deliveries of the run already committed sub-windows. In the delivery's one source
snapshot it finds each sub-window's end with index reads, then stages, verifies and commits that
sub-window as its own ledger entry (the ordinary one-table commit: same staging, checks, overlap
guard and heads row), in window order. The last sub-window's transaction also records the run's
own entry with the whole run's counts; run.completed is built from that entry, as for any run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from worker import tracing
from worker.errors import LoadError
from worker.events import Counters, SubWindowProgress
from worker.faults import crash_point
from worker.ledger import LedgerEntry
from worker.sinks.base import Sink
from worker.sub_windows import sub_window_entry, summary
from worker.table_run import TableRun
from worker.window import Window

log = logging.getLogger(__name__)


@dataclass
class SubWindowedRun:
    sink: Sink
    table: TableRun  # planned: its window is the rest of the run's, its resume what is committed

    def execute(self) -> tuple[tuple[LedgerEntry, ...], bool]:
        """Commit the rest of the run; return the run's entries in force and whether this delivery
        committed them (False: an earlier or concurrent one had)."""
        table, done = self.table, list(self.table.resume.done)
        window = table.window
        assert window is not None, "a sub-windowed run is windowed"
        run_high = table.resume.high or window.high_text
        last_token = ""
        rest: Window | None = window
        while rest is not None:
            table.attempt.check_deadlines()
            bound = table.source.split_point(rest, table.attempt.options.chunk_rows)
            sub = Window(rest.column, rest.low, rest.high if bound is None else bound)
            at = SubWindowProgress(len(done) + 1, sub.low_text, sub.high_text,
                                   sum(entry.rows_loaded for entry in done))
            part = table.sub_window(sub, at)
            entry = self._commit(part, run_high, done, last=bound is None)
            done.append(entry)
            last_token = part.staging.token
            for name in ("rows_extracted", "rows_loaded", "batches_loaded"):
                setattr(table.counters, name, getattr(table.counters, name) + getattr(part.counters, name))
            log.info("run %s: sub-window %d [%s, %s) committed, %d rows", table.attempt.run_id, at.number,
                     sub.low_text, sub.high_text, entry.rows_loaded)
            crash_point("sub_window_committed")
            rest = None if bound is None else Window(rest.column, bound, rest.high)
        with tracing.step("report"):
            return self._report(last_token)

    def _commit(self, part: TableRun, run_high: str, done: Sequence[LedgerEntry], last: bool
                ) -> LedgerEntry:
        """Stage, verify and commit one sub-window; on the last, the run's own entry too."""
        attempt = part.attempt
        assert part.sub_window_at is not None
        part.open_staging(self.sink)
        try:
            with tracing.step("stage", dest_table=part.dest_table, load_type=part.spec.load_type):
                part.stage(self.sink)
            with tracing.step("commit", tables=1):
                attempt.check_deadlines()
                attempt.events.progress(Counters.total((part.progress_base, part.counters)),
                                        phase="committing", force=True, sub_window=part.sub_window_at)
                # The entries after the committing event: run.completed's seq, reserved with the
                # run's entry, must follow the seq of every event published before it.
                entry = sub_window_entry(part.entry(0), attempt.run_id, run_high, part.sub_window_at.number)
                records: tuple[LedgerEntry, ...] = ()
                if last:
                    records = (summary(attempt.run_id, [*done, entry], attempt.events.reserve_seq(),
                                       attempt.number),)
                crash_point("before_commit")
                (in_force,) = self.sink.commit_job([(part.staging, entry)], records)
        finally:
            part.drop_staging()
        if in_force.staging_token != part.staging.token:
            log.info("run %s: sub-window %d was already committed by delivery %s", attempt.run_id,
                     part.sub_window_at.number, in_force.staging_token)
        return in_force

    def _report(self, last_token: str) -> tuple[tuple[LedgerEntry, ...], bool]:
        attempt = self.table.attempt
        entries = self.sink.find_job(attempt.run_id)
        if not entries:
            raise LoadError(f"run {attempt.run_id}: its last sub-window is committed but not the run's entry")
        log.info("run %s committed in %d sub-windows: %d rows in %.1fs", attempt.run_id,
                 entries[0].sub_windows or 1, entries[0].rows_loaded, entries[0].duration_seconds)
        crash_point("after_commit")
        attempt.events.completed(*entries)
        return entries, entries[0].staging_token == last_token
