"""MySQL/MariaDB speed against the server's own CPU (issue 16): `python -m bench.mysql_speed`.

Three tables, all on the bench tables (bench/datasets.py) of the MariaDB measured:

- **floor**: the single-snapshot path against the server's CPU floor. In one consistent snapshot on
  one connection, as the worker runs them, `SELECT COUNT(*)` and then the dump: `SELECT *` of the
  table, the server's own text protocol with nothing added (fetched unconverted by `_mysql`'s
  `fetch_row` and dropped), each timed by mariadbd's CPU (utime + stime of /proc/<pid>/stat, every
  server thread). floor rows/s = rows ÷ (server CPU of the COUNT + server CPU of the dump). The
  dump is the table's, not the worker's statement: what the worker sends costs the server less
  (columns rather than the generic SELECT's casts, a MariaDB DOUBLE's bytes rather than its text,
  `mysql_raw`), and a floor that followed the worker's statement would count each saving of the
  server's work against the worker. The worker path (bench/paths.py `worker`: snapshot, COUNT(*),
  batches, Parquet parts) runs in its own process, interleaved round after round with the floor;
  its rows/s ÷ floor rows/s is the ratio (goal ≥ 0.85). "Server busy" is mariadbd's CPU during
  the worker's own run ÷ the run's wall time (its COUNT, its SELECT, its few planning queries): how
  close the worker keeps the server to saturation, with no drift between two measurements.
  "N-core ceiling" is the highest worker ÷ floor the run's CPU allows on this machine's N cores,
  which the server shares with the worker: N * floor CPU ÷ (worker client CPU + server CPU of the
  worker's run), since the run's wall time is at least its CPU spread over every core.
- **parallel**: the chunked path (`worker-ranges`: primary-key ranges, each on its own
  connection and snapshot) with 1, 2, 4 readers against dlt's connectorx backend; rows/s, wall,
  the client's CPU (the measured part, every thread), the server's CPU meanwhile, CPU per 1M rows.
- **stages**: where the single-snapshot path's client CPU goes, on the first floor table: the raw
  reader's fetch, each column's conversion and the Parquet part, run in turn by one thread and
  each timed by that thread's CPU (`stage_table`).

By default both run on a private MariaDB (devstack/private_mariadb.py) whose buffer pool holds the
tables, warmed by one unmeasured scan of each: the floor is CPU, and a server reading pages from disk
(the machine's 3306 has a 128 MB pool) waits for them in the worker's wall time but not in the
floor's CPU; nor does another session's work count in its CPU. `--shared-server` measures the
machine's own server instead. This VM's CPU time per row swings by up to 50 % from one run to the
next, so each round measures the floor and the worker back to back, the ratio is taken per round,
and the median of the rounds' ratios is shown with their range.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from bench.datasets import MYSQL_URL, SCHEMA, BenchTable, ensure_tables
from bench.measure import Sample, run_path
from bench.paths import catalog_request

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
class Server:
    """The MariaDB measured: its SQLAlchemy URL (the bench database) and mariadbd's process id."""

    url: str
    pid: int
    buffer_pool_mb: int | None = None  # None: the machine's server, as configured


@contextmanager
def bench_server(shared: bool, buffer_pool_mb: int) -> Iterator[Server]:
    if shared:
        yield Server(MYSQL_URL, server_pid())
        return
    from devstack.private_mariadb import private_mariadb

    with private_mariadb("etl-bench-mariadb-", (f"--innodb-buffer-pool-size={buffer_pool_mb}M",)) as private:
        url = f"mysql+mysqldb://root@127.0.0.1:{private.port}/{SCHEMA}"
        yield Server(url, private.server_pid, buffer_pool_mb)


@dataclass(frozen=True)
class Floor:
    rows: int
    count_cpu_s: float
    select_cpu_s: float
    wall_s: float  # the COUNT and the SELECT, from the client

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.count_cpu_s + self.select_cpu_s, 1e-9)


def measure_floor(table: BenchTable, pid: int) -> Floor:
    """The server CPU of the COUNT(*) and of the table's dump, in one snapshot on one connection."""
    import MySQLdb

    from worker.sources import mysql_raw

    statement = f"SELECT * FROM `{table.schema}`.`{table.table}`"
    conn = MySQLdb.connect(**_connect_args(table), conv={})
    try:
        conn.query(mysql_raw.START_SNAPSHOT_SQL)  # as the worker's session
        conn.query(mysql_raw.UTC_SESSION_SQL)
        before, started = server_cpu_s(pid), time.perf_counter()
        conn.query(f"SELECT COUNT(*) FROM `{table.schema}`.`{table.table}`")
        (count,) = conn.store_result().fetch_row()[0]
        counted = server_cpu_s(pid)
        conn.query(statement)
        result, rows = conn.use_result(), 0
        while fetched := result.fetch_row(BATCH_ROWS):
            rows += len(fetched)
        selected, wall_s = server_cpu_s(pid), time.perf_counter() - started
        conn.query("ROLLBACK")
    finally:
        conn.close()
    if rows != int(count):
        raise RuntimeError(f"read {rows} rows, COUNT(*) said {count!r}")
    return Floor(rows, counted - before, selected - counted, wall_s)


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
_CORES = os.cpu_count() or 1
_FLOOR_HEADER = ("| rows | worker rows/s | worker s | server CPU s (worker run) | COUNT(*) server CPU s | "
                 "SELECT server CPU s | floor wall s | floor rows/s | worker ÷ floor (range) | "
                 f"server busy (range) | worker client CPU s | {_CORES}-core ceiling (range) |\n"
                 + "|---:" * 12 + "|")


def floor_table(tables: list[BenchTable], rounds: int, pid: int) -> str:
    lines = [_FLOOR_HEADER]
    for table in tables:
        floors: list[Floor] = []
        runs: list[Run] = []
        for round_no in range(1, rounds + 1):
            floors.append(measure_floor(table, pid))
            runs.append(timed("worker", 1, pid, functools.partial(run_path, "worker", table, BATCH_ROWS)))
            worker, floor = runs[-1].rows_per_s, floors[-1].rows_per_s
            print(f"  round {round_no} {table.rows:,}: floor {floor:,.0f} rows/s, "
                  f"worker {worker:,.0f} rows/s ({worker / floor:.2f})", flush=True)
        lines.append(_floor_row(table, floors, runs))
    return "\n".join(lines)


def _floor_row(table: BenchTable, floors: list[Floor], runs: list[Run]) -> str:
    ratios = [r.rows_per_s / f.rows_per_s for r, f in zip(runs, floors, strict=True)]
    busy = [r.server_cpu_s / r.sample.seconds for r in runs]  # mariadbd's cores, the worker's run
    ceilings = [_ceiling(r, f) for r, f in zip(runs, floors, strict=True)]
    cells = [f"{table.rows:,}", f"{_med(r.rows_per_s for r in runs):,.0f}",
             f"{_med(r.sample.seconds for r in runs):.2f}",
             f"{_med(r.server_cpu_s for r in runs):.2f}", f"{_med(f.count_cpu_s for f in floors):.2f}",
             f"{_med(f.select_cpu_s for f in floors):.2f}", f"{_med(f.wall_s for f in floors):.2f}",
             f"{_med(f.rows_per_s for f in floors):,.0f}", f"**{_med(ratios):.2f}** {_range(ratios)}",
             f"{_med(busy):.2f} {_range(busy)}", f"{_med(r.sample.cpu_s or 0.0 for r in runs):.2f}",
             f"{_med(ceilings):.2f} {_range(ceilings)}"]
    return "| " + " | ".join(cells) + " |"


def _ceiling(run: Run, floor: Floor) -> float:
    """The highest worker ÷ floor this run's CPU allows when the server shares the machine's cores
    with the worker: its wall time is at least (client CPU + server CPU) ÷ cores."""
    spent_s = (run.sample.cpu_s or 0.0) + run.server_cpu_s
    return _CORES * (floor.count_cpu_s + floor.select_cpu_s) / max(spent_s, 1e-9)


def _range(values: list[float]) -> str:
    return f"({min(values):.2f}-{max(values):.2f})"


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


# --- where the worker's client CPU goes --------------------------------------------------------------
def stage_table(table: BenchTable) -> str:
    """The raw reader's stages on `table`, each timed by the CPU of the one thread that runs them
    all in turn (no stage waits on another): the fetch (the driver's rows made one binary array per
    column: the read-ahead thread's part), each column's conversion (the consumer's) and the
    Parquet part (the part writer's). Per 1M rows."""
    from worker.sources import get_source, mysql_raw
    from worker.sources.fastpath import gc_paused
    from worker.sources.sqlalchemy_source import SqlAlchemyTable
    from worker.spool import part_writer

    costs: dict[str, float] = {}
    request = catalog_request("mysql", table.url, table.schema, table.table)
    with (get_source("mysql").snapshot(request) as snapshot,
          tempfile.TemporaryDirectory(prefix="etl-bench-") as spool):
        assert isinstance(snapshot, SqlAlchemyTable)
        read = snapshot.read_plan(None, BATCH_ROWS)
        finishes = mysql_raw.plan_raw(read)
        if finishes is None:
            raise RuntimeError(f"the raw reader does not read {table.table}")
        writer = part_writer(Path(spool) / "part.parquet", read.schema)
        with mysql_raw.raw_result(read) as fetch, gc_paused():
            while (raw := _timed(costs, "fetch", fetch)) is not None:
                arrays = [_timed(costs, f"convert {field.column.name} ({field.target.bq_type})",
                                 functools.partial(finish, values, field, read.nulled))
                          for values, finish, field in zip(raw, finishes, read.fields, strict=True)]
                batch = pa.RecordBatch.from_arrays(arrays, schema=read.schema)
                _timed(costs, "Parquet", functools.partial(writer.write_batch, batch))
        _timed(costs, "Parquet", writer.close)
    total, millions = sum(costs.values()), table.rows / 1e6
    lines = ["| stage | client CPU s per 1M rows | share |", "|---|---:|---:|"]
    lines += [f"| {stage} | {cpu_s / millions:.3f} | {cpu_s / total:.0%} |" for stage, cpu_s in costs.items()]
    lines.append(f"| all | {total / millions:.3f} | 100% |")
    return "\n".join(lines)


R = TypeVar("R")


def _timed(costs: dict[str, float], stage: str, step: Callable[[], R]) -> R:
    started = time.thread_time()
    result = step()
    costs[stage] = costs.get(stage, 0.0) + time.thread_time() - started
    return result


def _med(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,5000000", help="floor: table sizes, comma-separated")
    parser.add_argument("--parallel-rows", type=int, default=5_000_000, help="parallel: the table size")
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10k rows, 1 round, no dlt: a smoke run")
    parser.add_argument("--dlt", action=argparse.BooleanOptionalAction, default=True,
                        help="also run dlt-connectorx (the bench extra)")
    parser.add_argument("--shared-server", action="store_true",
                        help="measure BENCH_MYSQL_URL's server (the machine's) instead of a private one")
    parser.add_argument("--buffer-pool-mb", type=int, default=2048,
                        help="the private server's buffer pool (128: MariaDB's default, below the tables)")
    args = parser.parse_args(argv)
    pool_mb = min(args.buffer_pool_mb, 64) if args.quick else args.buffer_pool_mb  # a smoke run: 10k rows
    with bench_server(args.shared_server, pool_mb) as server:
        return _run(args, server)


def _run(args: argparse.Namespace, server: Server) -> int:
    sizes = [10_000] if args.quick else [int(r) for r in args.rows.split(",")]
    rounds = 1 if args.quick else args.rounds
    pid = server.pid
    print(f"load average before: {_load()}", flush=True)
    tables = [t for rows in sizes for t in ensure_tables(rows, ["mysql"], mysql_url=server.url)]
    parallel_rows = 10_000 if args.quick else args.parallel_rows
    (parallel,) = ensure_tables(parallel_rows, ["mysql"], mysql_url=server.url)
    for table in {t.table: t for t in [*tables, parallel]}.values():
        measure_floor(table, pid)  # warms the buffer pool: every round reads the tables from memory
    started = time.monotonic()
    floors = floor_table(tables, rounds, pid)
    ranges = parallel_table(parallel, args.readers, rounds, pid, args.dlt and not args.quick)
    print(f"load average after: {_load()} ({time.monotonic() - started:.0f} s)", flush=True)
    where = ("the machine's server" if server.buffer_pool_mb is None
             else f"a private server, {server.buffer_pool_mb} MB buffer pool")
    print(f"\nMariaDB single-snapshot path against the server's CPU floor ({where}), median of {rounds}")
    print(floors)
    print(f"\nMariaDB chunked parallel path, {parallel.rows:,} rows, median of {rounds}\n{ranges}")
    print(f"\nWhere the single-snapshot path's client CPU goes, {tables[0].rows:,} rows (one thread)")
    print(stage_table(tables[0]))
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
