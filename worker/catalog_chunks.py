"""Chunked resume of a big `catalog` run: the plan, its identities and its final-commit rule.

The pure part of issue 16's catalog resume (docs/modes.md, "Big catalog tables"); the run itself
is worker/catalog_chunk_run.py, the run's tables worker/sinks/bigquery_chunks.py.

A catalog run whose table holds more than ETL_CHUNK_ROWS rows is read in chunks of its primary key
(the table's primary key): `[b0, b1) [b1, b2) ... [bn, +inf)`, where `b0` is "no lower bound".
The bounds are found ONCE, in the first delivery's snapshot, and stored with the run (the chunk
record), so every later delivery reads the same chunks whatever the table looks like by then.
A chunk's rows are loaded straight into the run's own staging table (named from the run id, not a
delivery), each row carrying its chunk's number, its plan's identity, its chunk's read time and
its try (the loading delivery's staging token); then ONE row in the chunk record marks that try
of that chunk finished. Only the rows of a chunk's marked try count (`final_rows_sql`), so a try
killed half-loaded, or staged by a losing plan, is never counted, and nothing is copied twice.

Pure functions only: the plan, names, and the SQL texts the sink runs (the mark, the final rows).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.constants import STAGING_PREFIX

CHUNK_COLUMN = "_etl_chunk"  # the chunk number of a staged row (dropped by the final commit)
READ_AT_COLUMN = "_etl_chunk_read_at"  # when its chunk's snapshot was opened
PLAN_COLUMN = "_etl_chunk_plan"  # the identity of the plan its chunk belongs to
TRY_COLUMN = "_etl_chunk_try"  # the try that loaded it (that delivery's staging token)
MARK_COLUMNS = (CHUNK_COLUMN, PLAN_COLUMN, READ_AT_COLUMN, TRY_COLUMN)  # after the row's own columns
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_IDENTITY = re.compile(r"[0-9a-f]{16}")
_RUN_CHARS = 80  # as the delivery staging names: traceable, well under BigQuery's 1024

KeyValue = tuple[Any, ...]  # one primary key value, one item per key column


@dataclass(frozen=True)
class Chunk:
    """Rows whose key k satisfies low <= k < high (None: unbounded), compared as a tuple."""

    number: int  # 1-based, in key order
    low: KeyValue | None
    high: KeyValue | None


@dataclass(frozen=True)
class ChunkPlan:
    """A run's chunks, fixed at its first delivery: the key columns and the inner bounds."""

    key: tuple[str, ...]  # source names of the key columns, in key order
    bounds: tuple[KeyValue, ...]  # strictly increasing; n bounds make n + 1 chunks

    def chunks(self) -> tuple[Chunk, ...]:
        edges: list[KeyValue | None] = [None, *self.bounds, None]
        return tuple(Chunk(index + 1, edges[index], edges[index + 1]) for index in range(len(edges) - 1))

    def to_text(self) -> str:
        """The plan as stored with the run (JSON; key values as their JSON form)."""
        return json.dumps({"key": list(self.key), "bounds": [list(b) for b in self.bounds]},
                          separators=(",", ":"), default=str)

    @property
    def identity(self) -> str:
        """A short digest of the stored plan: every staged row and finished mark carries it, so
        chunks of a plan that lost the race of two first deliveries are never counted."""
        return hashlib.sha256(self.to_text().encode()).hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str) -> ChunkPlan:
        data = json.loads(text)
        return cls(tuple(data["key"]), tuple(tuple(bound) for bound in data["bounds"]))


def plan_of(key: Sequence[str], points: Sequence[KeyValue]) -> ChunkPlan:
    """A plan from the key values found at every ETL_CHUNK_ROWS-th position of the key order, as
    the database sorted them. Their order is the database's (a text key's collation, which Python's
    string order need not share), so it is kept as given; only a repeated point (none on a primary
    key; kept safe anyway) is dropped, so no chunk is empty and the chunks cover the keys once."""
    if not key:
        raise ValueError("a chunked catalog run needs a key (the table's or the request's primary_key)")
    bounds: list[KeyValue] = []
    for point in points:
        if len(point) != len(key):
            raise ValueError(f"a split point has {len(point)} values for a key of {len(key)} columns")
        if not bounds or bounds[-1] != tuple(point):
            bounds.append(tuple(point))
    return ChunkPlan(tuple(key), tuple(bounds))


def unfinished(plan: ChunkPlan, finished: Sequence[int]) -> tuple[Chunk, ...]:
    """The chunks a delivery still has to read: those without a finished mark, in key order."""
    done = set(finished)
    return tuple(chunk for chunk in plan.chunks() if chunk.number not in done)


def run_staging_name(run_id: str) -> str:
    """`_etl_staging_<run>_chunks`: the run's staging table, shared by all its deliveries; the
    prefix is the delivery tables', so the staging expiration and the reaper cover it alike."""
    return f"{STAGING_PREFIX}{_UNSAFE.sub('_', run_id)[:_RUN_CHARS]}_chunks"


def chunk_record_name(run_id: str) -> str:
    """`_etl_staging_<run>_chunks_done`: one row per finished chunk, and one row 0 for the plan."""
    return f"{run_staging_name(run_id)}_done"


def mark_chunk_sql(record: str) -> str:
    """The one statement that makes a chunk finished: its try's mark, written once all of that
    try's rows are loaded and counted. Parameters: @chunk (INT64), @plan (STRING: the plan's
    identity), @try (STRING), @rows (INT64), @read_at (TIMESTAMP), @nulled (STRING: JSON, per column
    the try's values loaded as NULL)."""
    return (f"INSERT INTO {record} (chunk, plan_id, try_token, rows_staged, read_at, values_nulled)\n"
            "  VALUES (@chunk, @plan, @try, @rows, @read_at, @nulled)")


def marks_sql(record: str) -> str:
    """One mark per finished chunk of the plan @plan: of two tries that both finished a chunk (two
    deliveries racing), the earliest read (then the smaller token) counts, the other never does."""
    return (f"SELECT chunk, try_token, rows_staged, read_at, values_nulled FROM {record} "
            "WHERE chunk > 0 AND plan_id = @plan\n"
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY chunk ORDER BY read_at, try_token) = 1")


def final_rows_sql(staging: str, record: str, columns: Sequence[str]) -> str:
    """What the final commit puts into the destination: the rows of each finished chunk's marked
    try, of the plan @plan. One row per key: the chunks of a plan are disjoint key ranges, and one
    try of a chunk is one read of its range (the final staging checks the count against the marks)."""
    names = ", ".join(f"s.`{name}`" for name in columns)
    return (
        f"SELECT {names} FROM {staging} AS s\n"
        f"JOIN ({marks_sql(record)}) AS m\n"
        f"  ON s.`{CHUNK_COLUMN}` = m.chunk AND s.`{TRY_COLUMN}` = m.try_token\n"
        f"WHERE s.`{PLAN_COLUMN}` = @plan"
    )


def final_rows_view_sql(staging: str, record: str, columns: Sequence[str], plan_identity: str) -> str:
    """`final_rows_sql` for a view (a view takes no parameters): the plan's identity, a digest of
    16 hex digits, written in. The final commit reads the run's staging through this view, so the
    rows are copied once, into the destination."""
    if not _IDENTITY.fullmatch(plan_identity):
        raise ValueError(f"not a plan identity: {plan_identity!r}")
    return final_rows_sql(staging, record, columns).replace("@plan", f"'{plan_identity}'")
