"""What a sink offers the runner: a ledger, a per-delivery staging area, and one atomic commit."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from worker.columns import Column
from worker.ledger import LedgerEntry


class Staging(Protocol):
    """Rows of one delivery of one run, invisible to readers until `commit`."""

    token: str  # unique per delivery; part of every job id, stored in the ledger entry
    warnings: tuple[str, ...]  # about the destination's schema, for run.completed

    def load_part(self, path: Path) -> int:
        """Load one Parquet part file (written with `arrow_schema(columns)`); return rows loaded."""
        ...

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        """In ONE transaction: if the ledger has no row for entry.run_id, replace (catalog) or append
        (transactional) the destination's rows with the staged rows and insert `entry` into the
        ledger. Return the ledger entry in force afterwards: `entry` itself when this call applied
        it (its staging_token), or the earlier delivery's entry when the run was already applied."""
        ...

    def drop(self) -> None:
        """Remove the staging table (idempotent; never raises for a missing table)."""
        ...


class Sink(Protocol):
    def find_commit(self, run_id: str) -> LedgerEntry | None:
        """The ledger entry of `run_id`, if that run was ever applied."""
        ...

    def last_window_high(self, data_source_id: int, dest_table: str) -> str | None:
        """The greatest committed window_high for this data source and destination, as stored."""
        ...

    def open_staging(
        self, dest_table: str, columns: tuple[Column, ...], run_id: str, attempt: int, load_type: str
    ) -> Staging:
        """Make sure the dataset, the ledger and the destination (created from `columns` when
        missing; evolved or refused when its schema differs) exist, then create this delivery's
        staging table (expiring, in case a crash leaves it behind)."""
        ...
