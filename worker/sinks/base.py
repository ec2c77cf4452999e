"""What a sink offers the runner: a ledger, a per-delivery staging area per table, and one atomic
commit of every table of a job."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from worker.catalog_chunks import ChunkPlan
from worker.columns import Column
from worker.ledger import LedgerEntry


@dataclass(frozen=True)
class MergePlan:
    """How a merge run applies its rows: by key, newest cursor wins, deletes (docs/modes.md)."""

    key: tuple[str, ...]  # BigQuery names of the columns identifying a row
    cursor: str  # BigQuery name of the change cursor: a staged row replaces an older version only
    soft_delete: str | None = None  # a staged row with this set (non-NULL, not false) is deleted
    reconcile: bool = False  # every source key is staged too; destination rows of other keys go
    empty_first: bool = False  # cdc's first run: the destination is emptied, then the snapshot applied


class Staging(Protocol):
    """Rows of one table of one delivery of a job, invisible to readers until the job's commit."""

    token: str  # unique per delivery; part of every job id, stored in the ledger entry
    warnings: tuple[str, ...]  # about the destination's schema, for run.completed

    def load_part(self, path: Path) -> int:
        """Load one Parquet part file (written with `arrow_schema(columns)`); return rows loaded."""
        ...

    def load_keys_part(self, path: Path) -> int:
        """Load one part of the source's keys (a merge run with `reconcile`); return keys loaded."""
        ...

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        """A job of this one table: `Sink.commit_job([(self, entry)])`'s one entry."""
        ...

    def duplicate_count(self, columns: tuple[str, ...]) -> int:
        """Staged rows beyond the first of each distinct value of these columns (NULL counts as a
        value): 0 when they are unique within the run's rows."""
        ...

    def drop(self) -> None:
        """Remove the staging tables (idempotent; never raises for a missing table)."""
        ...


# One table of a job's commit: its staging (opened by the same sink) and its ledger entry.
TableCommit = tuple[Staging, LedgerEntry]


class ChunkLoad(Protocol):
    """One try of one chunk of a chunked catalog run, loading into the run's staging."""

    @property
    def columns(self) -> tuple[Column, ...]:
        """The columns of its parts (`marked` batches)."""
        ...

    def marked(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with the columns that name its chunk, plan, read time and try."""
        ...

    def load_part(self, path: Path) -> int:
        """Load one Parquet part of `marked` batches; return rows loaded."""
        ...


@dataclass(frozen=True)
class StagedChunks:
    """What the finished chunks of a plan hold (their marked tries, whichever delivery read them)."""

    rows: int  # rows staged, each chunk's counted and verified
    first_read_at: datetime | None  # the earliest chunk read (None: no chunk finished)
    values_nulled: Mapping[str, int]  # per column, values BigQuery could not hold, loaded as NULL


class RunChunkStore(Protocol):
    """A chunked catalog run's own tables, shared by its deliveries (worker/catalog_chunks.py)."""

    def open(self, plan: Callable[[], ChunkPlan]) -> tuple[ChunkPlan, frozenset[int]]:
        """The stored plan (`plan()` made and stored by the run's first delivery only) and the
        chunks of it already finished."""
        ...

    def staged(self) -> StagedChunks:
        """What the finished chunks of the plan hold."""
        ...

    def chunk_loader(self, number: int, read_at: datetime) -> ChunkLoad:
        """A new try of chunk `number`, read in a snapshot opened at `read_at`."""
        ...

    def staged_rows(self, loaded: ChunkLoad) -> int:
        """The rows of this try in the run's staging, as the sink holds them."""
        ...

    def finish_chunk(self, number: int, loaded: ChunkLoad, rows: int,
                     nulled: Mapping[str, int] | None = None) -> None:
        """Mark the try finished once all its `rows` are loaded and counted: from then on they count,
        with its values loaded as NULL (`nulled`, per column)."""
        ...

    def final_staging(self) -> tuple[Staging, StagedChunks]:
        """A delivery staging holding the finished chunks' rows, and what they hold (its row count
        checked against it); refused (LoadError, transient) for a plan that lost the race of two
        first deliveries or is unfinished."""
        ...

    def drop(self) -> None:
        """The run's tables, after its commit."""
        ...


class Sink(Protocol):
    def find_job(self, run_id: str) -> tuple[LedgerEntry, ...]:
        """The ledger entries of `run_id` (one per table of its job, in job order); () if that run
        was never applied."""
        ...

    def commit_job(self, tables: Sequence[TableCommit], records: Sequence[LedgerEntry] = ()
                   ) -> tuple[LedgerEntry, ...]:
        """In ONE transaction: if the ledger has no row for the run id, replace (catalog), append
        (transactional) or merge (merge) each table's staged rows into its destination and insert
        each table's entry into the ledger, and every entry of `records` (ledger rows with no rows
        of their own: a sub-windowed run's own entry); a check failing for any table changes none.
        Return the entries in force afterwards, in job order: these when this call applied them
        (their staging_token), or an earlier delivery's when the run was already applied."""
        ...

    def find_sub_windows(self, run_id: str) -> tuple[LedgerEntry, ...]:
        """The committed sub-window entries of `run_id` (worker/sub_windows.py), any order."""
        ...

    def check_destination(self, dest_table: str, columns: tuple[Column, ...]) -> None:
        """Refuse (SchemaMismatchError), without changing anything, a destination that exists and
        cannot take these columns: a job checks every table before any is prepared."""
        ...

    def last_window_high(self, data_source_id: int, dest_table: str) -> str | None:
        """The greatest committed window_high for this data source and destination, as stored."""
        ...

    def last_log_position(self, data_source_id: int, dest_table: str) -> str | None:
        """The change-log position (window_high) of the newest committed cdc run of this data source
        and destination, as stored; None when there is none."""
        ...

    def last_commit(self, data_source_id: int, dest_table: str) -> LedgerEntry | None:
        """The most recently committed run of this data source and destination, if any."""
        ...

    def run_chunks(self, run_id: str, dest_table: str, columns: tuple[Column, ...], attempt: int
                   ) -> RunChunkStore:
        """The tables of a chunked catalog run (worker/catalog_chunk_run.py), for this delivery."""
        ...

    def open_staging(
        self, dest_table: str, columns: tuple[Column, ...], run_id: str, attempt: int, load_type: str,
        merge: MergePlan | None = None,
    ) -> Staging:
        """Make sure the dataset, the ledger and the destination (created from `columns` when
        missing, clustered by the merge key; evolved or refused when its schema differs) exist,
        then create this delivery's staging table (and a keys table when `merge.reconcile`),
        expiring in case a crash leaves them behind. `merge` is required for a merge run."""
        ...
