"""CDC end to end: changes per second from the change log to BigQuery (`load_type: cdc`).

Starts its own server (PostgreSQL with wal_level=logical, or MariaDB with a ROW binlog: the
machine's servers have neither) and a BigQuery emulator, loads a table with a first cdc run (the
snapshot), makes CHANGES changes (inserts, updates, deletes in transactions of at most 100k),
then times ONE cdc run that applies them all: read the change log (PostgreSQL: peek and decode
pgoutput; MariaDB: one binlog dump), convert through the source's types, stage, MERGE with the
ledger row in one transaction (PostgreSQL: then advance the slot). The figure is changes / the
run's own duration (run.completed's duration_seconds).

    .venv/bin/python -m bench.cdc                      # PostgreSQL, 1M changes
    .venv/bin/python -m bench.cdc --dialect mariadb    # MariaDB's binlog, 1M changes
    .venv/bin/python -m bench.cdc --quick              # 10k changes
    .venv/bin/python -m bench.cdc --quick --dialect postgresql --dialect mariadb
                                                       # both, one after the other, on one BigQuery
                                                       # emulator (tests/test_bench_smoke.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PROJECT = "etl-bench"
QUICK_CHANGES = 10_000
STEP = 100_000  # changes per source transaction at most
BASE = 10**8  # ids of the inserted rows start above it


@dataclass(frozen=True)
class Dialect:
    """How one database makes the bench table and its changes."""

    source_type: str
    ddl: str
    row: str  # the SELECT list of a generated row, of `n`
    rows_from: str  # FROM ... generating n in [{low}, {high}]
    status: str  # the status expression of row n


POSTGRESQL = Dialect(
    "postgresql",
    "CREATE TABLE bench.items (id bigint PRIMARY KEY, customer_id integer, amount numeric(12, 2), "
    "status text, note varchar(64), created_at timestamptz, payload jsonb)",
    "n, n % 10000, (n % 100000) / 100.0, {status}, 'note ' || md5(n::text), "
    "timestamptz '2024-01-01 00:00:00+00' + n * interval '1 second', "
    "jsonb_build_object('sku', 'S' || n % 5000, 'qty', n % 7)",
    "generate_series({low}, {high}) n", "(ARRAY['new', 'paid', 'shipped', 'done'])[n % 4 + 1]")
MARIADB = Dialect(
    "mysql",
    "CREATE TABLE bench.items (id bigint PRIMARY KEY, customer_id int, amount decimal(12, 2), "
    "status varchar(16), note varchar(64), created_at timestamp(6) NULL, payload json)",
    "n, n % 10000, (n % 100000) / 100.0, {status}, CONCAT('note ', MD5(n)), "
    "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL n SECOND, "
    "JSON_OBJECT('sku', CONCAT('S', n % 5000), 'qty', n % 7)",
    "(SELECT seq AS n FROM seq_{low}_to_{high}) g", "ELT(n % 4 + 1, 'new', 'paid', 'shipped', 'done')")
DIALECTS = {"postgresql": POSTGRESQL, "mariadb": MARIADB}


@dataclass(frozen=True)
class Server:
    url: str
    params: dict[str, Any]


@contextlib.contextmanager
def server(name: str) -> Iterator[Server]:
    if name == "postgresql":
        from devstack.logical_postgres import logical_postgres

        with logical_postgres() as pg:
            yield Server(pg.url, pg.connection_params())
        return
    from devstack.private_mariadb import binlog_mariadb

    with binlog_mariadb() as maria:
        yield Server(maria.url, {**maria.connection_params(), "database": "bench"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000, help="changes to apply in the timed run")
    parser.add_argument("--dialect", choices=sorted(DIALECTS), action="append",
                        help="repeatable: each in turn, on one BigQuery emulator (default: postgresql)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CHANGES:,} changes")
    args = parser.parse_args(argv)
    from devstack.emulators import start_bigquery

    changes = QUICK_CHANGES if args.quick else args.changes
    logs = Path(tempfile.mkdtemp(prefix="etl-bench-cdc-"))
    # One emulator for every dialect: each run loads into a dataset of its own (_env), and starting
    # another emulator would only repeat its start-up.
    emulator = start_bigquery(PROJECT, logs)
    try:
        applied = [_bench(name, changes, emulator.host_port, logs) for name in args.dialect or ["postgresql"]]
    finally:
        emulator.stop()
    return 0 if all(count == changes for count in applied) else 1


def _bench(name: str, changes: int, bq_host: str, logs: Path) -> int:
    """One dialect's bench on its own server: the snapshot run, the changes, the timed run; prints
    its figure and returns the changes the timed run applied."""
    dialect = DIALECTS[name]
    with server(name) as source:
        engine = sa.create_engine(source.url, isolation_level="AUTOCOMMIT")
        inserts, updates, deletes = _split(changes)
        _create(engine, dialect, updates + deletes)
        env = _env(bq_host)
        request = {"data_source_id": 1, "source_type": dialect.source_type, "schema_name": "bench",
                   "connection_params": source.params, "source_table_name": "items",
                   "dest_table_name": "items", "load_type": "cdc"}
        _run(request, env, logs)  # the first run: the snapshot
        started = time.perf_counter()
        _change(engine, dialect, inserts, updates, deletes)
        print(f"made {changes} changes ({inserts} inserts, {updates} updates, {deletes} deletes) "
              f"in {time.perf_counter() - started:.1f}s")
        event, wall_s = _run(request, env, logs)
        engine.dispose()
    cdc = event["cdc"]
    applied = int(cdc["inserts"] + cdc["updates"] + cdc["deletes"])
    run_s = float(event["duration_seconds"])
    print(f"{name} cdc run: {applied} changes applied in {run_s:.1f}s (wall {wall_s:.1f}s): "
          f"{applied / run_s:,.0f} changes/s end to end")
    return applied


def _split(changes: int) -> tuple[int, int, int]:
    """Half inserts, 40 % updates, 10 % deletes (of rows present before)."""
    inserts, deletes = changes // 2, changes // 10
    return inserts, changes - inserts - deletes, deletes


def _rows(dialect: Dialect, low: int, high: int, offset: int = 0) -> str:
    row = dialect.row.format(status=dialect.status)
    if offset:
        row = row.replace("n, ", f"n + {offset}, ", 1)
    return f"SELECT {row} FROM {dialect.rows_from.format(low=low, high=high)}"


def _create(engine: sa.Engine, dialect: Dialect, rows: int) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE SCHEMA bench"))
        conn.execute(sa.text(dialect.ddl))
        for low in range(0, rows, STEP):
            conn.execute(sa.text(f"INSERT INTO bench.items {_rows(dialect, low + 1, min(low + STEP, rows))}"))


def _change(engine: sa.Engine, dialect: Dialect, inserts: int, updates: int, deletes: int) -> None:
    """Each in transactions of at most STEP changes (a realistic log, not one giant transaction)."""
    with engine.connect() as conn:
        for low in range(0, inserts, STEP):
            high = min(low + STEP, inserts)
            conn.execute(sa.text(f"INSERT INTO bench.items {_rows(dialect, low + 1, high, BASE)}"))
        for low in range(0, updates, STEP):
            high = min(low + STEP, updates)
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
