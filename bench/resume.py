"""Resume of a big backfill: a 6M-row PostgreSQL table, a run killed at ~70 % of its rows, then
its redelivery, against a fresh full run of the same table (`python -m bench.resume`).

Two modes (`--mode`): `transactional` (the window in sub-windows, below) and `catalog` (the whole
table in key chunks of ETL_CHUNK_ROWS, worker/catalog_chunk_run.py: the killed run has finished
four chunks, the redelivery reads the other two, then both make the final one-row-per-key staging
and the catalog commit; the fresh runs are a chunked one and an unchunked one, ETL_CHUNK_ROWS=0).
`--quick`: 20,000 rows in chunks of 5,000 (the smoke test's run).

Each run is the one-shot `etl-worker run --request FILE` against one BigQuery emulator. The killed
run is SIGKILLed by fault injection at the batch holding the 70 % row (`ETL_CRASH_AT=
extraction_started` with `ETL_CRASH_OCCURRENCE`); with ETL_CHUNK_ROWS=1,000,000 its first four
sub-windows are committed by then. The redelivery is the same request again (same run id): it
finds the committed sub-windows and reads only the rest. A fresh full run (another dataset, so
another ledger) reads all 6M rows, once with sub-windows (today's default) and once in one commit
(ETL_CHUNK_ROWS=0, the path without resume). Wall and CPU seconds (user + system) of each worker
process, and CPU seconds of the BigQuery emulator's processes meanwhile (it loads and commits on
its own, so it holds most of the wall time); the machine is shared, so CPU seconds say what wall
time cannot.

The table gets an index on its cursor (`created_at`): sub-window boundaries are index reads; and
`id` as its primary key, which a catalog run splits by: chunks are ranges of its index.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
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
from bench.e2e import event_of
from bench.paths import connection_params

PROJECT = "etl-bench"
ROWS = 6_000_000
CHUNK_ROWS = 1_000_000
BATCH_ROWS = 10_000
KILL_FRACTION = 0.7
_RESUMED = re.compile(r"(?P<all>\d+) key chunks, \d+ finished earlier \(\d+ rows\), (?P<todo>\d+) to read")
_CHUNK_READ = re.compile(r"read (\d+) rows in \d+ batches from")


@dataclass(frozen=True)
class Run:
    name: str
    wall_s: float
    cpu_s: float  # user + system of the worker process
    emulator_cpu_s: float  # user + system of the emulator's processes during the run
    returncode: int
    events: list[dict[str, Any]]
    log: str = ""  # the worker's log (a catalog run's: INFO, which says what it resumed)

    @property
    def completed(self) -> dict[str, Any] | None:
        done = [e for e in self.events if e.get("event_type") == "run.completed"]
        return done[-1] if done else None


@dataclass(frozen=True)
class Scenario:
    mode: str  # transactional | catalog
    chunk_rows: int
    batch_rows: int

    @property
    def split(self) -> str:
        return "sub-windows" if self.mode == "transactional" else "key chunks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--mode", choices=("transactional", "catalog"), default="transactional")
    parser.add_argument("--quick", action="store_true", help="20,000 rows in chunks of 5,000 (a smoke run)")
    args = parser.parse_args()
    rows, chunk_rows, batch_rows = (20_000, 5_000, 1_000) if args.quick else (args.rows, args.chunk_rows,
                                                                             BATCH_ROWS)
    scenario = Scenario(args.mode, chunk_rows, batch_rows)
    (table,) = ensure_tables(rows, ["postgresql"])
    _index_cursor_and_key(table)
    from devstack.emulators import start_bigquery

    logs = Path(tempfile.mkdtemp(prefix="etl-bench-resume-"))
    emulator = start_bigquery(PROJECT, logs)
    try:
        report(measure(table, emulator.host_port, emulator.process.pid, logs, scenario), rows, scenario)
    finally:
        emulator.stop()


def measure(table: BenchTable, bq_host: str, bq_pid: int, logs: Path, scenario: Scenario) -> dict[str, Run]:
    occurrence = math.ceil(KILL_FRACTION * table.rows / scenario.batch_rows)
    killed_dataset, run_number = f"bench_{uuid.uuid4().hex[:8]}", int(time.time())
    kill = {"ETL_FAULT_INJECTION": "1", "ETL_CRASH_AT": "extraction_started",
            "ETL_CRASH_OCCURRENCE": str(occurrence)}
    target = (bq_host, bq_pid)
    one_commit = dataclasses.replace(scenario, chunk_rows=0)
    runs = {
        "killed at 70 %": _run(table, target, logs, killed_dataset, run_number, scenario, kill),
        "redelivery": _run(table, target, logs, killed_dataset, run_number, scenario),
        f"fresh full run, {scenario.split}": _run(table, target, logs, f"bench_{uuid.uuid4().hex[:8]}",
                                                  run_number + 1, scenario),
        "fresh full run, one commit": _run(table, target, logs, f"bench_{uuid.uuid4().hex[:8]}",
                                           run_number + 2, one_commit),
    }
    _check_copy(bq_host, killed_dataset, table)
    return runs


def report(runs: dict[str, Run], rows: int, scenario: Scenario) -> None:
    print(f"\n{rows} rows, {scenario.mode}, ETL_CHUNK_ROWS={scenario.chunk_rows}, killed in the batch "
          f"holding row {KILL_FRACTION:.0%}")
    print(f"{'run':30} {'wall s':>7} {'CPU s':>6} {'emu CPU s':>9} {'rows read':>10} {'to read':>10} "
          f"{scenario.split:>11}")
    for name, run in runs.items():
        done = run.completed
        parts = (done.get("sub_windows") if done else None) if scenario.mode == "transactional" else \
            _chunks_to_read(run)
        print(f"{name:30} {run.wall_s:7.1f} {run.cpu_s:6.1f} {run.emulator_cpu_s:9.1f} {_read_by(run):>10} "
              f"{_expected(run):>10} {parts!s:>11}")
    fresh, redelivery = runs[f"fresh full run, {scenario.split}"], runs["redelivery"]
    plain = runs["fresh full run, one commit"]
    print(f"\nredelivery / fresh full run ({scenario.split}): wall {redelivery.wall_s / fresh.wall_s:.2f}, "
          f"CPU {redelivery.cpu_s / fresh.cpu_s:.2f}")
    print(f"redelivery / fresh full run (one commit):  wall {redelivery.wall_s / plain.wall_s:.2f}, "
          f"CPU {redelivery.cpu_s / plain.cpu_s:.2f}")
    both = [(run.cpu_s + run.emulator_cpu_s) for run in (redelivery, fresh, plain)]
    print(f"worker + emulator CPU, redelivery / fresh full run: {both[0] / both[1]:.2f} ({scenario.split}), "
          f"{both[0] / both[2]:.2f} (one commit)")
    print(f"{scenario.split}' own cost (fresh: {scenario.split} / one commit): "
          f"wall {fresh.wall_s / plain.wall_s:.2f}, CPU {fresh.cpu_s / plain.cpu_s:.2f}")


def _tree_cpu_s(pid: int) -> float:
    """User + system seconds of a process and its descendants (Linux /proc), 0 elsewhere."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents[child], ticks[child] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def _expected(run: Run) -> int:
    """The rows this process's run.started announced (a redelivery: only those not yet committed)."""
    started = [e for e in run.events if e.get("event_type") == "run.started"]
    return int(started[-1]["rows_expected"] or 0) if started else 0


def _chunks_to_read(run: Run) -> str:
    """`to read/all` key chunks, as the run's log says when it starts reading."""
    found = _RESUMED.search(run.log)
    return f"{found['todo']}/{found['all']}" if found else "-"


def _read_by(run: Run) -> int:
    """Rows this process read from the source: the counters of its last progress or outcome event
    (a catalog run in key chunks: the rows of its own chunks, from its log, as far as they ended)."""
    if "key chunks, " in run.log:
        return sum(int(n) for n in _CHUNK_READ.findall(run.log))
    counted = [e for e in run.events if "rows_extracted" in e and e.get("event_type") != "run.completed"]
    return int(counted[-1]["rows_extracted"]) if counted else 0


def _run(table: BenchTable, target: tuple[str, int], logs: Path, dataset: str, run_number: int,
         scenario: Scenario, faults: dict[str, str] | None = None) -> Run:
    bq_host, bq_pid = target
    request = logs / f"request-{run_number}.json"
    request.write_text(json.dumps(_request(table, run_number, scenario.mode)))
    env = {**os.environ, "GCP_PROJECT_ID": PROJECT, "BIGQUERY_EMULATOR_HOST": bq_host,
           "BIGQUERY_DATASET": dataset, "ETL_JSON_LOGS": "false", "ETL_BATCH_SIZE": str(scenario.batch_rows),
           "ETL_CHUNK_ROWS": str(scenario.chunk_rows), "ETL_PROGRESS_INTERVAL_SECONDS": "1",
           "ETL_INCREMENTAL_LAG": "0", **(faults or {})}
    level = "INFO" if scenario.mode == "catalog" else "WARNING"  # the catalog run logs what it resumes
    argv = [sys.executable, "-m", "worker", "--log-level", level, "run", "--request", str(request)]
    before, bq_before = resource.getrusage(resource.RUSAGE_CHILDREN), _tree_cpu_s(bq_pid)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    after, bq_after = resource.getrusage(resource.RUSAGE_CHILDREN), _tree_cpu_s(bq_pid)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    events = [e for e in map(event_of, done.stdout.splitlines()) if e]
    run = Run(dataset, wall_s, cpu_s, bq_after - bq_before, done.returncode, events, done.stderr)
    killed = faults is not None
    if (done.returncode != 0) != killed or (run.completed is None) != killed:
        raise RuntimeError(f"run in {dataset} ended {done.returncode}: {done.stderr[-3000:]}")
    print(f"  {dataset} run {run_number}: {wall_s:.1f}s wall, {cpu_s:.1f}s CPU, emulator "
          f"{run.emulator_cpu_s:.1f}s CPU, exit {done.returncode}", flush=True)
    return run


def _request(table: BenchTable, run_number: int, mode: str) -> dict[str, object]:
    body: dict[str, object] = {
        "schema_version": 1, "data_source_id": 1, "etl_run_id": run_number, "source_type": table.dialect,
        "schema_name": table.schema, "source_table_name": table.table,
        "dest_table_name": f"bench_{table.table}", "load_type": mode,
        "connection_params": connection_params(table.url),
    }
    if mode == "transactional":
        body |= {"timestamp_column": "created_at", "historical_start_date": "2023-01-01"}
    return body


def _index_cursor_and_key(table: BenchTable) -> None:
    engine = sa.create_engine(table.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {table.table}_created_at "
                                 f"ON {table.qualified} (created_at)")
            keyed = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND conrelid = CAST(%s AS regclass)",
                (table.qualified,)).scalar_one()
            if not keyed:  # a catalog run splits by the table's primary key
                conn.exec_driver_sql(f"ALTER TABLE {table.qualified} ADD PRIMARY KEY (id)")
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
