"""MySQL/MariaDB speed against the server's own CPU (issue 16): `python -m bench.mysql_speed`.

Two tables, both on the bench tables (bench/datasets.py) of the local MariaDB:

- **floor**: the single-snapshot path against the server's CPU floor. In one consistent snapshot on
  one connection, as the worker runs them, `SELECT COUNT(*)` and then the worker's own SELECT (the
  statement `mysql_raw` runs, fetched unconverted by `_mysql`'s `fetch_row` and dropped), each
  timed by mariadbd's CPU (utime + stime of /proc/<pid>/stat, every server thread). floor rows/s =
  rows ÷ (server CPU of the COUNT + server CPU of the SELECT). The worker path (bench/paths.py
  `worker`: snapshot, COUNT(*), batches, Parquet parts) runs in its own process, interleaved
  round after round with the floor; its rows/s ÷ floor rows/s is the ratio (goal ≥ 0.85).
- **parallel**: the chunked path (`worker-ranges`: primary-key ranges, each on its own
  connection and snapshot) with 1, 2, 4 readers against dlt's connectorx backend; rows/s, wall,
  the client's CPU (the measured part, every thread), the server's CPU meanwhile, CPU per 1M rows.

The machine is shared: another session's statements count in mariadbd's CPU too, so the load
average is printed before and after, and medians of the rounds are shown.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench.datasets import BenchTable, ensure_tables
from bench.measure import Sample, run_path

BATCH_ROWS = 10_000
_TICKS = os.sysconf("SC_CLK_TCK")


# --- the server's CPU ------------------------------------------------------------------------------
def server_pid() -> int:
    return int(subprocess.check_output(["pidof", "mariadbd"], text=True).split()[0])


def server_cpu_s(pid: int) -> float:
    """mariadbd's CPU seconds so far (user + system, all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class Floor:
    rows: int
    count_cpu_s: float
    select_cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.count_cpu_s + self.select_cpu_s, 1e-9)


def measure_floor(table: BenchTable, pid: int) -> Floor:
    """The server CPU of the worker's two statements, in one snapshot on one connection."""
    import MySQLdb

    from worker.sources import mysql_raw

    statement = worker_statement(table)
    conn = MySQLdb.connect(**_connect_args(table), conv={})
    try:
        conn.query(mysql_raw.START_SNAPSHOT_SQL)  # as the worker's session
        conn.query(mysql_raw.UTC_SESSION_SQL)
        before = server_cpu_s(pid)
        conn.query(f"SELECT COUNT(*) FROM `{table.schema}`.`{table.table}`")
        (count,) = conn.store_result().fetch_row()[0]
        counted = server_cpu_s(pid)
        conn.query(statement)
        result, rows = conn.use_result(), 0
        while fetched := result.fetch_row(BATCH_ROWS):
            rows += len(fetched)
        selected = server_cpu_s(pid)
        conn.query("ROLLBACK")
    finally:
        conn.close()
    if rows != int(count):
        raise RuntimeError(f"read {rows} rows, COUNT(*) said {count!r}")
    return Floor(rows, counted - before, selected - counted)


def worker_statement(table: BenchTable) -> str:
    """The SELECT the worker's raw reader runs on this table (compiled by SQLAlchemy, bound)."""
    from bench.paths import catalog_request
    from worker.sources import get_source, mysql_raw
    from worker.sources.sqlalchemy_source import SqlAlchemyTable

    request = catalog_request("mysql", table.url, table.schema, table.table)
    with get_source("mysql").snapshot(request) as snapshot:
        assert isinstance(snapshot, SqlAlchemyTable)
        read = snapshot.read_plan(None, BATCH_ROWS)
        dbapi = read.conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            return mysql_raw.raw_statement(read, cursor)
        finally:
            cursor.close()


def _connect_args(table: BenchTable) -> dict[str, object]:
    from sqlalchemy import make_url

    url = make_url(table.url)
    return {"host": url.host or "127.0.0.1", "port": url.port or 3306, "user": url.username or "root",
            "passwd": url.password or "", "db": url.database or table.schema, "charset": "utf8mb4"}


# --- paths in a child, with the server's CPU meanwhile --------------------------------------------
@dataclass(frozen=True)
class Run:
    name: str
    readers: int
    sample: Sample
    server_cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.sample.rows / self.sample.seconds


def timed(name: str, readers: int, pid: int, run: Callable[[], Sample]) -> Run:
    before = server_cpu_s(pid)
    sample = run()
    return Run(name, readers, sample, server_cpu_s(pid) - before)


# --- the tables ------------------------------------------------------------------------------------
def floor_table(tables: list[BenchTable], rounds: int, pid: int) -> str:
    lines = ["| rows | worker rows/s | worker s | server CPU s (worker run) | COUNT(*) server CPU s | "
             "SELECT server CPU s | floor rows/s | worker ÷ floor | worker client CPU s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for table in tables:
        floors: list[Floor] = []
        runs: list[Run] = []
        for round_no in range(1, rounds + 1):
            floors.append(measure_floor(table, pid))
            runs.append(timed("worker", 1, pid, functools.partial(run_path, "worker", table, BATCH_ROWS)))
            print(f"  round {round_no} {table.rows:,}: floor {floors[-1].rows_per_s:,.0f} rows/s, "
                  f"worker {runs[-1].rows_per_s:,.0f} rows/s", flush=True)
        floor = statistics.median(f.rows_per_s for f in floors)
        worker = statistics.median(r.rows_per_s for r in runs)
        lines.append(
            f"| {table.rows:,} | {worker:,.0f} | {_med(r.sample.seconds for r in runs):.2f} | "
            f"{_med(r.server_cpu_s for r in runs):.2f} | {_med(f.count_cpu_s for f in floors):.2f} | "
            f"{_med(f.select_cpu_s for f in floors):.2f} | {floor:,.0f} | **{worker / floor:.2f}** | "
            f"{_med(r.sample.cpu_s or 0.0 for r in runs):.2f} |")
    return "\n".join(lines)


def parallel_table(table: BenchTable, readers: Sequence[int], rounds: int, pid: int, dlt: bool) -> str:
    runs: dict[tuple[str, int], list[Run]] = {}
    for round_no in range(1, rounds + 1):
        for count in readers:
            extra = ("--readers", str(count))
            run = timed("worker-ranges", count, pid,
                        functools.partial(run_path, "worker-ranges", table, BATCH_ROWS, extra))
            runs.setdefault((run.name, count), []).append(run)
            print(f"  round {round_no} worker-ranges x{count}: {run.rows_per_s:,.0f} rows/s", flush=True)
        if dlt:
            run = timed("dlt-connectorx", 1, pid, lambda: run_path("dlt-connectorx", table, BATCH_ROWS))
            runs.setdefault((run.name, 1), []).append(run)
            print(f"  round {round_no} dlt-connectorx: {run.rows_per_s:,.0f} rows/s", flush=True)
    lines = ["| path | readers | rows/s | wall s | client CPU s | server CPU s | CPU s per 1M rows "
             "(client + server) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for (name, count), group in runs.items():
        wall = _med(r.sample.seconds for r in group)
        client = _med(r.sample.cpu_s or 0.0 for r in group)
        server = _med(r.server_cpu_s for r in group)
        rows = group[0].sample.rows
        lines.append(f"| {name} | {count} | {rows / wall:,.0f} | {wall:.2f} | {client:.2f} | {server:.2f} | "
                     f"{(client + server) / (rows / 1e6):.2f} |")
    return "\n".join(lines)


def _med(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,5000000", help="floor: table sizes, comma-separated")
    parser.add_argument("--parallel-rows", type=int, default=5_000_000, help="parallel: the table size")
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10k rows, 1 round, no dlt: a smoke run")
    parser.add_argument("--dlt", action=argparse.BooleanOptionalAction, default=True,
                        help="also run dlt-connectorx (the bench extra)")
    args = parser.parse_args(argv)
    sizes = [10_000] if args.quick else [int(r) for r in args.rows.split(",")]
    rounds = 1 if args.quick else args.rounds
    pid = server_pid()
    print(f"load average before: {_load()}", flush=True)
    tables = [t for rows in sizes for t in ensure_tables(rows, ["mysql"])]
    (parallel,) = ensure_tables(10_000 if args.quick else args.parallel_rows, ["mysql"])
    started = time.monotonic()
    floors = floor_table(tables, rounds, pid)
    ranges = parallel_table(parallel, args.readers, rounds, pid, args.dlt and not args.quick)
    print(f"load average after: {_load()} ({time.monotonic() - started:.0f} s)", flush=True)
    print(f"\nMariaDB single-snapshot path against the server's CPU floor, median of {rounds}\n{floors}")
    print(f"\nMariaDB chunked parallel path, {parallel.rows:,} rows, median of {rounds}\n{ranges}")
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
