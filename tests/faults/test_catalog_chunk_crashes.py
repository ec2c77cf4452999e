"""A big catalog run read in key chunks (ETL_CHUNK_ROWS, worker/catalog_chunk_run.py) whose worker
is killed (SIGKILL) at a chunk boundary (its rows loaded but not yet finished; finished), in the
middle of a chunk (its part loaded, not finished; with one reader and with two), and after the
final commit (before run.completed and the ack); a fresh worker takes the redelivery over. Five
scenarios, sources taking turns, to stay within a minute (each waits one 10 s ack deadline); the
phases between (a part written, run.completed published) are the one-table suite's, unchanged.
Judged as the one-table crash suite is (test_crash_recovery.py): only once the fresh worker has
acked a later delivery, then

- the destination equals the source, row by row: each row once;
- one ledger row for the run, with every row (250 staged, counted and loaded), from the killed
  delivery when its commit had run, else from the fresh one;
- the fresh delivery followed the stored plan and read only the chunks without a finished mark
  (its own log), so across both deliveries every row was staged for the commit once;
- the run's own tables are gone; Django sees one run.completed (one event id), whose
  `values_nulled` counts every chunk's values BigQuery cannot hold (one in 50 rows), whichever
  delivery read the chunk.

250 rows, ETL_CHUNK_ROWS=100: chunks of 100, 100 and 50 rows, each one batch (ETL_BATCH_SIZE=100)
and one part (ETL_PART_ROWS=150), so a phase's N-th passage is in chunk N.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_rows, settings_env, settings_from_env
from tests.faults.harness import COMMITTED_BY_THE_KILLED, WorkerProcess, kill_then_redeliver, ledger
from worker.catalog_chunks import chunk_record_name, run_staging_name
from worker.faults import CATALOG_CHUNK_PHASES, PHASES

ROWS, CHUNK_ROWS, CHUNKS = 250, 100, 3
_RESUMED = re.compile(r"(\d+) key chunks, (\d+) finished earlier \((\d+) rows\), (\d+) to read")
# (phase, its N-th passage in the killed process, chunks finished before the kill, source, readers);
# None: two readers interleave their chunks, so how many were finished depends on their timing.
SCENARIOS: list[tuple[str, int, int | None, str, int]] = [
    ("chunk_loaded", 2, 1, "postgresql", 1),  # boundary: chunk 2 loaded, not yet finished
    ("chunk_finished", 1, 1, "mysql", 1),  # boundary: chunk 1 finished, chunk 2 unread
    ("staging_loaded", 3, 2, "postgresql", 1),  # mid-chunk: chunk 3's part loaded, not finished
    ("staging_loaded", 2, None, "mysql", 2),  # mid-chunk, two readers (a snapshot per chunk)
    ("after_commit", 1, 3, "mysql", 1),  # committed, run tables dropped, run.completed not published
]
assert {phase for phase, *_ in SCENARIOS} <= {*PHASES, *CATALOG_CHUNK_PHASES}


def chunk_stack(pubsub_host: str, bq_host: str, dataset: str, readers: int) -> Stack:
    env = settings_env(pubsub_host, bq_host, dataset, ETL_BATCH_SIZE=100, ETL_PART_ROWS=150,
                       ETL_CHUNK_ROWS=CHUNK_ROWS, ETL_READERS_PER_RUN=readers, ETL_MAX_DELIVERY_ATTEMPTS=20)
    return Stack(settings_from_env(env), env)


@pytest.mark.parametrize(
    ("orders_source", "phase", "occurrence", "killed_finished", "readers"),
    [pytest.param(source, phase, n, done, readers, id=f"{phase}-{n}-{source}-{readers}r")
     for phase, n, done, source, readers in SCENARIOS],
    indirect=["orders_source"])
def test_a_chunked_catalog_run_killed_at_or_inside_a_chunk_resumes_and_copies_each_row_once(
    phase: str, occurrence: int, killed_finished: int | None, readers: int, orders_source: SeededSource,
    pubsub_emulator: Any, bq_emulator: Any, bq_dataset: str, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path,
) -> None:
    stack = chunk_stack(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset, readers)
    number = uuid.uuid4().int % 10**12
    run_id = f"etl-run-{number}"
    expected = with_unholdable_values(orders_source)
    body = orders_source.request("catalog", etl_run_id=number)
    # When the worker dies at the phase's passage, and a fresh one takes the redelivery over
    faults = {"ETL_CRASH_AT": phase, "ETL_CRASH_OCCURRENCE": str(occurrence)}
    takeover = kill_then_redeliver(stack, body, run_id, faults, workers, tmp_path)
    context = takeover.context
    assert takeover.died_at.startswith(phase), context
    completed = takeover.events.wait_completed_after(run_id, takeover.killed_at)
    # Then the destination equals the source, each row once
    copied = [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")]
    assert copied == expected, context
    # And one ledger row with every row, from the delivery whose commit is in force
    (entry,) = ledger(bq_client, bq_dataset, run_id)
    assert (entry["rows_extracted"], entry["rows_loaded"], entry["source_row_count"]) == (ROWS,) * 3, entry
    by_killed = phase in COMMITTED_BY_THE_KILLED
    assert entry["attempt"] == (takeover.killed_attempt if by_killed else takeover.fresh.attempt), context
    # And the fresh delivery read only the chunks the killed one had not finished
    fresh_log = workers[-1].log_text()
    resumed = [tuple(int(n) for n in m.groups()) for m in _RESUMED.finditer(fresh_log)]
    if by_killed:
        assert resumed == [], (context, resumed)  # it found the run committed and only reported it
    else:
        ((chunks, done, rows_done, to_read),) = resumed
        assert chunks == CHUNKS and done + to_read == CHUNKS and rows_done == min(done * CHUNK_ROWS, ROWS)
        assert killed_finished is None or done == killed_finished, (context, resumed)
        killed_log = workers[-2].log_text()
        assert "finished earlier" in killed_log and "0 finished earlier (0 rows)" in killed_log
    # And the run's own tables are gone
    names = {table.table_id for table in bq_client.list_tables(f"{bq_client.project}.{bq_dataset}")}
    assert not names & {run_staging_name(run_id), chunk_record_name(run_id)}, names
    # And Django sees one run.completed with every row
    assert {p.event["event_type"] for p in completed} == {"run.completed"}, (context, completed)
    assert len({p.event["event_id"] for p in completed}) == 1, (context, completed)
    assert completed[-1].event["rows_loaded"] == ROWS
    # And its values loaded as NULL are every chunk's, whichever delivery read them
    assert completed[-1].event["values_nulled"] == {UNHOLDABLE[orders_source.dialect][0]: 5}, completed


# Per source, a column and a value BigQuery cannot hold (loaded as NULL, counted): PostgreSQL's
# numeric(12, 2) holds NaN, MariaDB's TINYINT(1) holds 2; in rows 50, 100, ..., 250, one per
# 50 rows, so every chunk but none of the kills' phases depends on them.
UNHOLDABLE = {"postgresql": ("amount", "'NaN'"), "mysql": ("is_paid", "2")}
_POSITION = {"amount": 2, "is_paid": 4}  # in orders_table's column order


def with_unholdable_values(source: SeededSource) -> list[tuple[Any, ...]]:
    """Write UNHOLDABLE's value into every 50th row; the rows BigQuery then holds, the value NULL."""
    column, value = UNHOLDABLE[source.dialect]
    quote = '"' if source.dialect == "postgresql" else "`"
    with source.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {quote}{source.schema}{quote}.orders SET {column} = {value} "
                             "WHERE MOD(id, 50) = 0"))
    position = _POSITION[column]
    return [tuple(None if i == position and row[0] % 50 == 0 else v for i, v in enumerate(row))
            for row in source.rows()]
