"""End to end on the local stack: a request → run.completed, with the BigQuery emulator as the sink.

Runs `etl-worker run --request FILE` (the one-shot mode: the same handler and runner as `serve`,
without the Pub/Sub transport) against a bench table and reads the run's own duration from its
run.completed event (started → committed, as the ledger stores it).

`python -m bench.e2e [--rows 1000000] [--rounds 5] [--dialect postgresql]` alone: the database's dump
(`COPY … TO STDOUT` on PostgreSQL) and the end-to-end run, interleaved round after round, with the
medians of wall and CPU seconds (the worker process's user + system; the machine is shared, and CPU
moves less with the neighbours than wall time does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.datasets import BenchTable

PROJECT = "etl-bench"


@dataclass(frozen=True)
class EndToEnd:
    rows: int
    run_s: float  # run.completed's duration_seconds: from the request's start to the commit
    wall_s: float  # including the interpreter's start-up and imports
    peak_rss_kib: int | None
    cpu_s: float = 0.0  # the worker process's user + system seconds
    committed_s: float = 0.0  # from starting the process to run.completed's occurred_at (after the commit)


def run_end_to_end(
    table: BenchTable, part_rows: int, rounds: int = 1, time_travel: bool = False
) -> list[EndToEnd]:
    """`rounds` runs (each into a new dataset) on one emulator (`time_travel`: with the emulator's
    copy of a table after every write, devstack/bqemulator_main.py)."""
    from devstack.emulators import start_bigquery

    logs = Path(tempfile.mkdtemp(prefix="etl-bench-e2e-"))
    emulator = start_bigquery(PROJECT, logs, time_travel=time_travel)
    try:
        return [_run_once(table, emulator.host_port, logs, part_rows) for _ in range(rounds)]
    finally:
        emulator.stop()


def _run_once(table: BenchTable, bq_host: str, logs: Path, part_rows: int) -> EndToEnd:
    request = logs / "request.json"
    request.write_text(json.dumps(_request(table)))
    env = {**os.environ, "GCP_PROJECT_ID": PROJECT, "BIGQUERY_EMULATOR_HOST": bq_host,
           "BIGQUERY_DATASET": f"bench_{uuid.uuid4().hex[:8]}", "ETL_JSON_LOGS": "false",
           "ETL_PART_ROWS": str(part_rows), "ETL_PROGRESS_INTERVAL_SECONDS": "5"}
    time_file = logs / "time.txt"
    argv = [sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--request", str(request)]
    if os.path.exists("/usr/bin/time"):
        argv = ["/usr/bin/time", "-v", "-o", str(time_file), *argv]
    before = _children_cpu_s()
    started, started_at = time.perf_counter(), time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    cpu_s = _children_cpu_s() - before
    completed = [e for e in map(event_of, done.stdout.splitlines()) if e.get("event_type") == "run.completed"]
    if done.returncode != 0 or not completed:
        output = done.stdout[-2000:] + done.stderr[-2000:]
        raise RuntimeError(f"end-to-end run failed ({done.returncode}): {output}")
    event = completed[-1]
    from bench.measure import peak_rss_kib

    completed_at = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00")).timestamp()
    return EndToEnd(int(event["rows_loaded"]), float(event["duration_seconds"]), wall_s,
                    peak_rss_kib(time_file) if time_file.exists() else None, cpu_s, completed_at - started_at)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def event_of(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _request(table: BenchTable) -> dict[str, object]:
    from bench.paths import connection_params

    return {
        "schema_version": 1, "data_source_id": 1, "etl_run_id": int(time.time()),
        "source_type": table.dialect, "schema_name": table.schema, "source_table_name": table.table,
        "dest_table_name": f"bench_{table.table}", "load_type": "catalog",
        "connection_params": connection_params(table.url),
    }


def main() -> None:
    from bench.datasets import ensure_tables
    from bench.measure import run_dump
    from bench.paths import PART_ROWS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dialect", default="postgresql")
    parser.add_argument("--time-travel", action="store_true",
                        help="keep the emulator's table copy after every write (bqemulator's default)")
    args = parser.parse_args()
    (table,) = ensure_tables(args.rows, [args.dialect])
    dumps, runs = [], []
    for _ in range(args.rounds):
        before = _children_cpu_s()
        dumps.append((run_dump(table).seconds, _children_cpu_s() - before))
        runs.extend(run_end_to_end(table, PART_ROWS, time_travel=args.time_travel))
    dump_s = statistics.median(d[0] for d in dumps)
    run_s = statistics.median(r.run_s for r in runs)
    print(f"{args.dialect}, {args.rows:,} rows, median of {args.rounds} (load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"dump: {dump_s:.2f} s wall, {statistics.median(d[1] for d in dumps):.2f} s CPU (the client's)")
    wall_s, cpu_s = (statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs))
    committed_s = statistics.median(r.committed_s for r in runs)
    print(f"request → run.completed: {run_s:.2f} s (the run's duration_seconds); process start → committed "
          f"{committed_s:.2f} s; the process: {wall_s:.2f} s wall, {cpu_s:.2f} s CPU")
    print(f"request → committed is {dump_s / run_s:.0%} of the dump's speed")


if __name__ == "__main__":
    main()
