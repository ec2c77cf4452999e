"""Resume of a big backfill: a 6M-row PostgreSQL table, a run killed at ~70 % of its rows, then
its redelivery, against a fresh full run of the same table (`python -m bench.resume`).

Each run is the one-shot `etl-worker run --request FILE` against one BigQuery emulator. The killed
run is SIGKILLed by fault injection at the batch holding the 70 % row (`ETL_CRASH_AT=
extraction_started` with `ETL_CRASH_OCCURRENCE`); with ETL_CHUNK_ROWS=1,000,000 its first four
sub-windows are committed by then. The redelivery is the same request again (same run id): it
finds the committed sub-windows and reads only the rest. A fresh full run (another dataset, so
another ledger) reads all 6M rows, once with sub-windows (today's default) and once in one commit
(ETL_CHUNK_ROWS=0, the path without resume). Wall and CPU seconds (user + system) of each worker
process; the machine is shared, so CPU seconds say what wall time cannot.

The table gets an index on its cursor (`created_at`): sub-window boundaries are index reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.datasets import BenchTable, ensure_tables
from bench.paths import connection_params

PROJECT = "etl-bench"
ROWS = 6_000_000
CHUNK_ROWS = 1_000_000
BATCH_ROWS = 10_000
KILL_FRACTION = 0.7


@dataclass(frozen=True)
class Run:
    name: str
    wall_s: float
    cpu_s: float  # user + system of the worker process
    returncode: int
    events: list[dict[str, Any]]

    @property
    def completed(self) -> dict[str, Any] | None:
        done = [e for e in self.events if e.get("event_type") == "run.completed"]
        return done[-1] if done else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    args = parser.parse_args()
    (table,) = ensure_tables(args.rows, ["postgresql"])
    _index_cursor(table)
    from devstack.emulators import start_bigquery

    logs = Path(tempfile.mkdtemp(prefix="etl-bench-resume-"))
    emulator = start_bigquery(PROJECT, logs)
    try:
        report(measure(table, emulator.host_port, logs, args.chunk_rows), args.rows, args.chunk_rows)
    finally:
        emulator.stop()


def measure(table: BenchTable, bq_host: str, logs: Path, chunk_rows: int) -> dict[str, Run]:
    occurrence = math.ceil(KILL_FRACTION * table.rows / BATCH_ROWS)
    killed_dataset, run_number = f"bench_{uuid.uuid4().hex[:8]}", int(time.time())
    kill = {"ETL_FAULT_INJECTION": "1", "ETL_CRASH_AT": "extraction_started",
            "ETL_CRASH_OCCURRENCE": str(occurrence)}
    runs = {
        "killed at 70 %": _run(table, bq_host, logs, killed_dataset, run_number, chunk_rows, kill),
        "redelivery": _run(table, bq_host, logs, killed_dataset, run_number, chunk_rows),
        "fresh full run, sub-windows": _run(table, bq_host, logs, f"bench_{uuid.uuid4().hex[:8]}",
                                            run_number + 1, chunk_rows),
        "fresh full run, one commit": _run(table, bq_host, logs, f"bench_{uuid.uuid4().hex[:8]}",
                                           run_number + 2, 0),
    }
    _check_copy(bq_host, killed_dataset, table)
    return runs


def report(runs: dict[str, Run], rows: int, chunk_rows: int) -> None:
    print(f"\n{rows} rows, ETL_CHUNK_ROWS={chunk_rows}, killed in the batch holding row {KILL_FRACTION:.0%}")
    print(f"{'run':30} {'wall s':>8} {'CPU s':>8} {'rows read':>10} {'to read':>10} {'sub-windows':>12}")
    for name, run in runs.items():
        done = run.completed
        subs = done.get("sub_windows") if done else None
        print(f"{name:30} {run.wall_s:8.1f} {run.cpu_s:8.1f} {_read_by(run):>10} {_expected(run):>10} "
              f"{subs!s:>12}")
    fresh, redelivery = runs["fresh full run, sub-windows"], runs["redelivery"]
    plain = runs["fresh full run, one commit"]
    print(f"\nredelivery / fresh full run (sub-windows): wall {redelivery.wall_s / fresh.wall_s:.2f}, "
          f"CPU {redelivery.cpu_s / fresh.cpu_s:.2f}")
    print(f"redelivery / fresh full run (one commit):  wall {redelivery.wall_s / plain.wall_s:.2f}, "
          f"CPU {redelivery.cpu_s / plain.cpu_s:.2f}")
    print(f"sub-windows' own cost (fresh: sub-windows / one commit): wall {fresh.wall_s / plain.wall_s:.2f}, "
          f"CPU {fresh.cpu_s / plain.cpu_s:.2f}")


def _expected(run: Run) -> int:
    """The rows this process's run.started announced (a redelivery: only those not yet committed)."""
    started = [e for e in run.events if e.get("event_type") == "run.started"]
    return int(started[-1]["rows_expected"] or 0) if started else 0


def _read_by(run: Run) -> int:
    """Rows this process read from the source: the counters of its last progress or outcome event."""
    counted = [e for e in run.events if "rows_extracted" in e and e.get("event_type") != "run.completed"]
    return int(counted[-1]["rows_extracted"]) if counted else 0


def _run(table: BenchTable, bq_host: str, logs: Path, dataset: str, run_number: int, chunk_rows: int,
         faults: dict[str, str] | None = None) -> Run:
    request = logs / f"request-{run_number}.json"
    request.write_text(json.dumps(_request(table, run_number)))
    env = {**os.environ, "GCP_PROJECT_ID": PROJECT, "BIGQUERY_EMULATOR_HOST": bq_host,
           "BIGQUERY_DATASET": dataset, "ETL_JSON_LOGS": "false", "ETL_BATCH_SIZE": str(BATCH_ROWS),
           "ETL_CHUNK_ROWS": str(chunk_rows), "ETL_PROGRESS_INTERVAL_SECONDS": "1",
           "ETL_INCREMENTAL_LAG": "0", **(faults or {})}
    argv = [sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--request", str(request)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    events = [e for e in map(_event, done.stdout.splitlines()) if e]
    run = Run(dataset, wall_s, cpu_s, done.returncode, events)
    killed = faults is not None
    if (done.returncode != 0) != killed or (run.completed is None) != killed:
        raise RuntimeError(f"run in {dataset} ended {done.returncode}: {done.stderr[-3000:]}")
    print(f"  {dataset} run {run_number}: {wall_s:.1f}s wall, {cpu_s:.1f}s CPU, exit {done.returncode}",
          flush=True)
    return run


def _request(table: BenchTable, run_number: int) -> dict[str, object]:
    return {
        "schema_version": 1, "data_source_id": 1, "etl_run_id": run_number, "source_type": table.dialect,
        "schema_name": table.schema, "source_table_name": table.table,
        "dest_table_name": f"bench_{table.table}", "load_type": "transactional",
        "timestamp_column": "created_at", "historical_start_date": "2023-01-01",
        "connection_params": connection_params(table.url),
    }


def _event(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _index_cursor(table: BenchTable) -> None:
    engine = sa.create_engine(table.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {table.table}_created_at "
                                 f"ON {table.qualified} (created_at)")
    finally:
        engine.dispose()


def _check_copy(bq_host: str, dataset: str, table: BenchTable) -> None:
    """The resumed destination holds every source row once."""
    from worker.sinks.bigquery_client import make_bigquery_client

    client = make_bigquery_client(PROJECT, bq_host)
    query = (f"SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids "
             f"FROM `{PROJECT}.{dataset}.bench_{table.table}`")
    (row,) = list(client.query(query).result())
    if (row["n"], row["ids"]) != (table.rows, table.rows):
        raise AssertionError(f"resumed copy holds {row['n']} rows, {row['ids']} ids; expected {table.rows}")
    print(f"  resumed copy: {row['n']} rows, {row['ids']} distinct ids (= the source)", flush=True)


if __name__ == "__main__":
    main()
