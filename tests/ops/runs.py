"""Run events as the worker publishes them (worker.events.RunEvents), onto any EventBus."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from worker.errors import EtlError
from worker.events import Counters, EventBus, RunEvents
from worker.ledger import LedgerEntry
from worker.messages import utcnow

_IDS = itertools.count(1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RunScript:
    """One delivery of one run: started, progress, then completed / failed / dead-lettered."""

    def __init__(self, bus: EventBus, *, table: str = "orders", data_source_id: int = 7,
                 run_id: str | None = None, attempt: int = 1) -> None:
        self.clock = FakeClock()
        self.run_id = run_id or f"etl-run-{next(_IDS) + 7000}"
        self.table, self.data_source_id, self.attempt = table, data_source_id, attempt
        self.events = RunEvents(bus, run_id=self.run_id, attempt=attempt, data_source_id=data_source_id,
                                etl_run_id=None, dest_table=table, load_type="catalog",
                                progress_interval_s=0, clock=self.clock)

    def started(self, rows_expected: int = 1000) -> RunScript:
        self.events.started("postgresql", f"public.{self.table}", rows_expected=rows_expected)
        return self

    def progress(self, rows: int, at_s: float) -> RunScript:
        self.clock.now = at_s
        self.events.progress(Counters(rows_extracted=rows), force=True)
        return self

    def completed(self, rows: int = 1000, seconds: float = 3.0, **entry: Any) -> RunScript:
        self.clock.now = seconds
        now = utcnow()
        self.events.completed(LedgerEntry(
            run_id=self.run_id, data_source_id=self.data_source_id, etl_run_id=None, dest_table=self.table,
            load_type="catalog", window_column=None, window_low=None, window_high=None,
            rows_extracted=rows, rows_loaded=rows, batches_loaded=1, source_row_count=rows,
            attempt=self.attempt, completed_seq=self.events.reserve_seq(), staging_token="t",
            started_at=now - timedelta(seconds=seconds), committed_at=now, duration_seconds=seconds,
            **entry))
        return self

    def failed(self, error: EtlError, will_retry: bool | None = None) -> RunScript:
        self.events.failed(error, Counters(), will_retry=will_retry)
        return self

    def dead_lettered(self, error: EtlError) -> RunScript:
        self.events.failed(error, Counters(), will_retry=False)
        self.events.dead_lettered(error, "projects/p/topics/requests-dead-letter")
        return self
