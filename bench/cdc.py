"""CDC end to end: changes per second from the change log to BigQuery (`load_type: cdc`).

Starts its own PostgreSQL with wal_level=logical (the machine's runs with replica) and a BigQuery
emulator, loads a table with a first cdc run (the slot's exported snapshot), makes CHANGES changes
(inserts, updates, deletes in a few large transactions), then times ONE cdc run that applies them
all: peek and decode, convert, stage, MERGE with the ledger row in one transaction, advance the
slot. The figure is changes / the run's own duration (run.completed's duration_seconds).

    .venv/bin/python -m bench.cdc                 # 1M changes
    .venv/bin/python -m bench.cdc --changes 20000 # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PROJECT = "etl-bench"
_DDL = """CREATE TABLE bench.items (
  id bigint PRIMARY KEY, customer_id integer, amount numeric(12, 2), status text, note varchar(64),
  created_at timestamptz, payload jsonb)"""
_ROW = ("g, g % 10000, (g % 100000) / 100.0, (ARRAY['new', 'paid', 'shipped', 'done'])[g % 4 + 1], "
        "'note ' || md5(g::text), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', "
        "jsonb_build_object('sku', 'S' || g % 5000, 'qty', g % 7)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cdc", description=__doc__)
    parser.add_argument("--changes", type=int, default=1_000_000, help="changes to apply in the timed run")
    args = parser.parse_args(argv)
    from devstack.emulators import start_bigquery
    from devstack.logical_postgres import logical_postgres

    logs = Path(tempfile.mkdtemp(prefix="etl-bench-cdc-"))
    with logical_postgres() as server:
        emulator = start_bigquery(PROJECT, logs)
        try:
            engine = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
            inserts, updates, deletes = _split(args.changes)
            _create(engine, updates + deletes)
            env = _env(emulator.host_port)
            request = {"data_source_id": 1, "source_type": "postgresql", "schema_name": "bench",
                       "connection_params": server.connection_params(), "source_table_name": "items",
                       "dest_table_name": "items", "load_type": "cdc"}
            _run(request, env, logs)  # the first run: the snapshot
            started = time.perf_counter()
            _change(engine, inserts, updates, deletes)
            print(f"made {args.changes} changes ({inserts} inserts, {updates} updates, {deletes} deletes) "
                  f"in {time.perf_counter() - started:.1f}s")
            event, wall_s = _run(request, env, logs)
        finally:
            emulator.stop()
    cdc = event["cdc"]
    applied = cdc["inserts"] + cdc["updates"] + cdc["deletes"]
    run_s = float(event["duration_seconds"])
    print(f"cdc run: {applied} changes applied in {run_s:.1f}s (wall {wall_s:.1f}s): "
          f"{applied / run_s:,.0f} changes/s end to end")
    return 0 if applied == args.changes else 1


def _split(changes: int) -> tuple[int, int, int]:
    """Half inserts, 40 % updates, 10 % deletes (of rows present before)."""
    inserts, deletes = changes // 2, changes // 10
    return inserts, changes - inserts - deletes, deletes


def _create(engine: sa.Engine, rows: int) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE SCHEMA bench"))
        conn.execute(sa.text(_DDL))
        conn.execute(sa.text(f"INSERT INTO bench.items SELECT {_ROW} FROM generate_series(1, {rows}) g"))


def _change(engine: sa.Engine, inserts: int, updates: int, deletes: int) -> None:
    """Each in transactions of at most 100k changes (a realistic log, not one giant transaction)."""
    step = 100_000
    base = 10**8
    with engine.connect() as conn:
        for low in range(0, inserts, step):
            high = min(low + step, inserts)
            conn.execute(sa.text(f"INSERT INTO bench.items SELECT {_ROW.replace('g,', f'g + {base},', 1)} "
                                 f"FROM generate_series({low + 1}, {high}) g"))
        for low in range(0, updates, step):
            high = min(low + step, updates)
            conn.execute(sa.text("UPDATE bench.items SET status = 'changed', amount = amount + 1 "
                                 f"WHERE id > {low} AND id <= {high}"))
        conn.execute(sa.text(f"DELETE FROM bench.items WHERE id > {updates} AND id <= {updates + deletes}"))


def _env(bq_host: str) -> dict[str, str]:
    return {**os.environ, "GCP_PROJECT_ID": PROJECT, "BIGQUERY_EMULATOR_HOST": bq_host,
            "BIGQUERY_DATASET": f"bench_{uuid.uuid4().hex[:8]}", "ETL_JSON_LOGS": "false",
            "ETL_PROGRESS_INTERVAL_SECONDS": "30", "ETL_MAX_RUN_SECONDS": "7200"}


def _run(request: dict[str, Any], env: dict[str, str], logs: Path) -> tuple[dict[str, Any], float]:
    path = logs / "request.json"
    path.write_text(json.dumps({**request, "etl_run_id": time.time_ns() // 1000}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--request",
                           str(path)], env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - started
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    completed = [e for e in events if e.get("event_type") == "run.completed"]
    if done.returncode != 0 or not completed:
        raise RuntimeError(f"cdc run failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return completed[-1], wall_s


if __name__ == "__main__":
    sys.exit(main())
