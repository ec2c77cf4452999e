"""An in-memory `Sink` for unit tests of the runner and the handler (no BigQuery).

It keeps the BigQuery sink's contract, in Python: the ledger decides whether a run is already
applied; a job's commit checks every table's staged counts, refuses an overlapping window or an
older catalog snapshot (SupersededError), then replaces, appends or merges (by key, newest cursor
wins, soft and reconciled deletes) each destination's rows and records one entry per table, all
tables or none. `lose_rows` drops rows from every loaded part, to exercise the verify step;
`before_commit` runs just before a commit applies (a concurrent run committing first), with the
job's first entry.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from worker.columns import Column
from worker.constants import CATALOG
from worker.errors import SourceDataError, SupersededError, VerificationError
from worker.ledger import LedgerEntry
from worker.modes import WINDOWED, mode_of
from worker.sinks.base import MergePlan, RunChunkStore, Staging, TableCommit
from worker.sub_windows import sub_window_prefix

_tokens = itertools.count(1)


@dataclass
class MemorySink:
    ledger: list[LedgerEntry] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lose_rows: int = 0
    before_commit: Callable[[LedgerEntry], None] | None = None
    stagings: list[MemoryStaging] = field(default_factory=list)

    def find_job(self, run_id: str) -> tuple[LedgerEntry, ...]:
        return tuple(entry for entry in self.ledger if entry.run_id == run_id)

    def find_commit(self, run_id: str) -> LedgerEntry | None:
        return next(iter(self.find_job(run_id)), None)

    def check_destination(self, dest_table: str, columns: tuple[Column, ...]) -> None:
        """The memory sink keeps no destination schema: every destination takes any columns."""

    def last_window_high(self, data_source_id: int, dest_table: str) -> str | None:
        windows = [e for e in self._windows(data_source_id, dest_table) if e.window_high is not None]
        latest = max(windows, key=lambda e: e.window_high_key or "", default=None)
        return None if latest is None else latest.window_high

    def last_log_position(self, data_source_id: int, dest_table: str) -> str | None:
        return None  # the memory source has no change log

    def last_commit(self, data_source_id: int, dest_table: str) -> LedgerEntry | None:
        mine = [e for e in self.ledger if (e.data_source_id, e.dest_table) == (data_source_id, dest_table)]
        return max(mine, key=lambda e: e.committed_at, default=None)

    def open_staging(self, dest_table: str, columns: tuple[Column, ...], run_id: str, attempt: int,
                     load_type: str, merge: MergePlan | None = None) -> MemoryStaging:
        self.tables.setdefault(dest_table, [])
        staging = MemoryStaging(self, dest_table, run_id, load_type, token=f"tok{next(_tokens):05d}",
                                merge=merge)
        self.stagings.append(staging)
        return staging

    def run_chunks(self, run_id: str, dest_table: str, columns: tuple[Column, ...], attempt: int
                   ) -> RunChunkStore:
        # The memory source has no key chunks, so the runner never asks (sinks/bigquery_chunks.py).
        raise NotImplementedError("the memory sink does not stage chunked catalog runs")

    def _windows(self, data_source_id: int, dest_table: str) -> list[LedgerEntry]:
        return [e for e in self.ledger if e.load_type in WINDOWED
                and (e.data_source_id, e.dest_table) == (data_source_id, dest_table)]

    def find_sub_windows(self, run_id: str) -> tuple[LedgerEntry, ...]:
        return tuple(entry for entry in self.ledger if entry.run_id.startswith(sub_window_prefix(run_id)))

    def commit_job(self, tables: Sequence[TableCommit], records: Sequence[LedgerEntry] = ()
                   ) -> tuple[LedgerEntry, ...]:
        """The commit transaction: every table's new rows are computed first; nothing changes
        unless every check of every table passes."""
        own = [(_own_staging(staging), entry) for staging, entry in tables]
        if self.before_commit is not None:
            self.before_commit(own[0][1])
        existing = self.find_job(own[0][1].run_id)
        if existing:
            return existing
        applied = {entry.dest_table: self._applied(staging, entry) for staging, entry in own}
        for dest_table, rows in applied.items():
            self.tables[dest_table][:] = rows
        self.ledger.extend(entry for _, entry in own)
        self.ledger.extend(records)
        return tuple(entry for _, entry in own)

    def _applied(self, staging: MemoryStaging, entry: LedgerEntry) -> list[dict[str, Any]]:
        """The destination's rows once this table's staging is applied (checked, not yet stored)."""
        if len(staging.rows) != entry.rows_extracted:
            raise VerificationError(f"staging holds {len(staging.rows)} rows, "
                                    f"{entry.rows_extracted} were extracted")
        if staging.keys is not None and len(staging.keys) != entry.keys_extracted:
            raise VerificationError(
                f"staging holds {len(staging.keys)} keys, {entry.keys_extracted} were read")
        self._guard(entry)
        rows = self.tables[entry.dest_table]
        applies = mode_of(entry.load_type).applies
        if applies == "merge":
            assert staging.merge is not None
            return _merged(rows, staging.rows, staging.merge, staging.keys)
        return [*([] if applies == "replace" else rows), *staging.rows]

    def _guard(self, entry: LedgerEntry) -> None:
        if entry.load_type == CATALOG:
            newer = [e for e in self.ledger if e.dest_table == entry.dest_table and e.load_type == CATALOG
                     and e.snapshot_at and entry.snapshot_at and e.snapshot_at > entry.snapshot_at]
            if newer:
                raise SupersededError("a newer snapshot of this table is already committed")
            return
        for other in self._windows(entry.data_source_id, entry.dest_table):
            if _overlap(other, entry):
                raise SupersededError("an overlapping window of this table is already committed")


def _merged(current: list[dict[str, Any]], staged: list[dict[str, Any]], plan: MergePlan,
            keys: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The BigQuery MERGE, in Python: newest staged version per key; not older than the row it
    replaces; soft-deleted rows removed; with reconciled keys, rows of other keys removed."""
    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in plan.key)

    if any(value is None for row in staged for value in key(row)):
        raise SourceDataError(f"a primary key column ({', '.join(plan.key)}) holds NULL")
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in sorted(staged, key=lambda r: (r[plan.cursor], repr(sorted(r.items())))):
        latest[key(row)] = row
    by_key = {key(row): row for row in current}
    for k, row in latest.items():
        old = by_key.get(k)
        if old is not None and old[plan.cursor] is not None and row[plan.cursor] < old[plan.cursor]:
            continue
        gone = plan.soft_delete is not None and row[plan.soft_delete] not in (None, False)
        if gone:
            by_key.pop(k, None)
        else:
            by_key[k] = row
    if keys is not None:
        alive = {key(row) for row in keys}
        by_key = {k: row for k, row in by_key.items() if k in alive}
    return list(by_key.values())


def _own_staging(staging: Staging) -> MemoryStaging:
    if not isinstance(staging, MemoryStaging):
        raise TypeError(f"the memory sink commits only its own stagings, not {staging!r}")
    return staging


def _overlap(a: LedgerEntry, b: LedgerEntry) -> bool:
    a_low, a_high = a.window_low_key, a.window_high_key or ""
    b_low, b_high = b.window_low_key, b.window_high_key or ""
    return (b_low is None or a_high > b_low) and (a_low is None or a_low < b_high)


@dataclass
class MemoryStaging:
    sink: MemorySink
    dest_table: str
    run_id: str
    load_type: str
    token: str
    merge: MergePlan | None = None
    warnings: tuple[str, ...] = ()
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] | None = None  # a reconciling merge's staged source keys
    dropped: bool = False

    def __post_init__(self) -> None:
        if self.merge is not None and self.merge.reconcile:
            self.keys = []

    def load_part(self, path: Path) -> int:
        rows = pq.read_table(path).to_pylist()
        kept = rows[: max(0, len(rows) - self.sink.lose_rows)]
        self.rows.extend(kept)
        return len(kept)

    def load_keys_part(self, path: Path) -> int:
        assert self.keys is not None, "this staging holds no keys"
        keys = pq.read_table(path).to_pylist()
        self.keys.extend(keys)
        return len(keys)

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        (in_force,) = self.sink.commit_job([(self, entry)])
        return in_force

    def duplicate_count(self, columns: tuple[str, ...]) -> int:
        distinct = {tuple(row[name] for name in columns) for row in self.rows}
        return len(self.rows) - len(distinct)

    def drop(self) -> None:
        self.dropped = True
