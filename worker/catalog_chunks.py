"""Chunked resume of a big `catalog` run: the plan, its identities and its final-commit rule.

The pure part of issue 16's catalog resume (docs/modes.md, "Big catalog tables"); the run itself
is worker/catalog_chunk_run.py, the run's tables worker/sinks/bigquery_chunks.py.

A catalog run whose table holds more than ETL_CHUNK_ROWS rows is read in chunks of its primary key
(the request's `primary_key`, else the table's): `[b0, b1) [b1, b2) ... [bn, +inf)`, where
`b0` is "no lower bound". The bounds are found ONCE, in the first delivery's snapshot, and stored
with the run (the chunk record), so every later delivery reads the same chunks whatever the
table looks like by then. Every staged row carries its chunk's number (`CHUNK_COLUMN`) in the
run's own staging table (named from the run id, not a delivery), so a half-staged chunk is
identified and replaced on redelivery, never counted twice: a chunk is staged by ONE script that
deletes the chunk's rows, inserts the chunk's freshly loaded rows and writes its "finished" row.

Pure functions only: the plan, names, and the SQL texts of the two statements the sink runs.
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
READ_AT_COLUMN = "_etl_chunk_read_at"  # when its chunk's snapshot was opened (the newest wins)
PLAN_COLUMN = "_etl_chunk_plan"  # the identity of the plan its chunk belongs to
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


def stage_chunk_sql(staging: str, loaded: str, record: str, columns: Sequence[str]) -> str:
    """ONE script making a chunk durable: its earlier rows (a half-staged earlier try) deleted,
    the rows just loaded (`loaded`, this try's table) inserted with their chunk number, plan and
    read time, and its finished mark written, all in one transaction: the rows and the mark become
    durable together or not at all. Parameters: @chunk (INT64), @plan (STRING: the plan's
    identity), @read_at (TIMESTAMP), @rows (INT64)."""
    names = ", ".join(f"`{name}`" for name in columns)
    return (
        "BEGIN TRANSACTION;\n"
        f"DELETE FROM {staging} WHERE `{CHUNK_COLUMN}` = @chunk AND `{PLAN_COLUMN}` = @plan;\n"
        f"DELETE FROM {record} WHERE chunk = @chunk AND plan_id = @plan;\n"
        f"INSERT INTO {staging} ({names}, `{CHUNK_COLUMN}`, `{PLAN_COLUMN}`, `{READ_AT_COLUMN}`)\n"
        f"  SELECT {names}, @chunk, @plan, @read_at FROM {loaded};\n"
        f"INSERT INTO {record} (chunk, plan_id, rows_staged, read_at)\n"
        "  VALUES (@chunk, @plan, @rows, @read_at);\n"
        "COMMIT TRANSACTION;\n"
    )


def final_rows_sql(staging: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """What the final commit puts into the destination: the run's staged rows, ONE per key. A row
    whose key was updated during the run from one chunk's range into another's already-read
    range could be staged twice (or, moving the other way, not at all: docs/modes.md); of two
    versions of a key the one read last (the newest chunk snapshot) wins. Only the rows of the
    winning plan count. Parameter: @plan (STRING: its identity)."""
    names = ", ".join(f"`{name}`" for name in columns)
    partition = ", ".join(f"`{name}`" for name in key)
    return (
        f"SELECT {names} FROM {staging} WHERE `{PLAN_COLUMN}` = @plan\n"
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {partition} "
        f"ORDER BY `{READ_AT_COLUMN}` DESC, `{CHUNK_COLUMN}` DESC) = 1"
    )


def final_rows_view_sql(staging: str, columns: Sequence[str], key: Sequence[str], plan_identity: str) -> str:
    """`final_rows_sql` for a view (a view takes no parameters): the plan's identity, a digest of
    16 hex digits, written in. The final commit reads the run's staging through this view, so the
    rows are copied once, into the destination, not first into a delivery staging table."""
    if not _IDENTITY.fullmatch(plan_identity):
        raise ValueError(f"not a plan identity: {plan_identity!r}")
    return final_rows_sql(staging, columns, key).replace("@plan", f"'{plan_identity}'")
