"""Parallel readers of one PostgreSQL table (ETL_READERS_PER_RUN, worker/sources/pg_parallel.py):
rows/s and CPU seconds per million rows for 1, 2 and 4 readers, against `COPY ... TO STDOUT` of the
same table by as many psql processes, each on the same heap block range (`python -m bench.parallel`).

The worker side is the source alone (snapshot, COPY, Arrow batches; no spool, no sink), in this
process: its CPU seconds (user + system, every thread) are the worker's cost. The psql side's CPU
seconds are the clients' (the server's COPY work is on neither side). Wall time cannot scale past
the machine's cores, and the machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time
from dataclasses import dataclass

import sqlalchemy as sa

from bench.datasets import BenchTable, ensure_tables
from bench.paths import catalog_request
from worker.sources import get_source
from worker.sources.pg_parallel import block_ranges

BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Sample:
    name: str
    readers: int
    rows: int
    wall_s: float
    cpu_s: float

    def line(self) -> str:
        per_m = self.cpu_s / (self.rows / 1e6) if self.rows else float("nan")
        return (f"{self.name:8} {self.readers:>7} {self.rows:>9} {self.wall_s:8.2f} "
                f"{self.rows / self.wall_s:>12,.0f} {self.cpu_s:7.2f} {per_m:12.2f}")


def worker_read(table: BenchTable, readers: int) -> Sample:
    request = catalog_request("postgresql", table.url, table.schema, table.table)
    before, started = _self_cpu_s(), time.perf_counter()
    rows = 0
    with get_source("postgresql", readers=readers).snapshot(request) as snap:
        for batch in snap.iter_batches(None, BATCH_ROWS):
            rows += batch.num_rows
    return Sample("worker", readers, rows, time.perf_counter() - started, _self_cpu_s() - before)


def psql_copy(table: BenchTable, readers: int) -> Sample:
    url = sa.make_url(table.url)
    ranges = block_ranges(_blocks(table), readers)
    argv = ["psql", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "",
            "-d", url.database or "", "-X", "-q", "-c"]
    before, started = _children_cpu_s(), time.perf_counter()
    with open(os.devnull, "wb") as sink:
        procs = [subprocess.Popen([*argv, f"COPY (SELECT * FROM {table.qualified} WHERE {_ctid(lo, hi)}) "
                                   "TO STDOUT"], stdout=sink) for lo, hi in ranges]
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"psql COPY failed ({proc.returncode})")
    return Sample("psql", readers, table.rows, time.perf_counter() - started, _children_cpu_s() - before)


def _ctid(lo: int, hi: int | None) -> str:
    low = f"ctid >= '({lo},0)'::tid"
    return low if hi is None else f"{low} AND ctid < '({hi},0)'::tid"


def _blocks(table: BenchTable) -> int:
    engine = sa.create_engine(table.url)
    try:
        with engine.connect() as conn:
            size = f"pg_relation_size('{table.qualified}') / current_setting('block_size')::int"
            return int(conn.exec_driver_sql(f"SELECT {size}").scalar_one())
    finally:
        engine.dispose()


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=6_000_000, help="the bench table (bench/datasets.py)")
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="10k rows: a smoke run (BENCH_ARGS=--quick)")
    args = parser.parse_args(argv)
    (table,) = ensure_tables(10_000 if args.quick else args.rows, ["postgresql"])
    worker_read(table, 1)  # warm the cache: every path then reads from memory
    print(f"{table.qualified}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    print(f"{'path':8} {'readers':>7} {'rows':>9} {'wall s':>8} {'rows/s':>12} {'CPU s':>7} "
          f"{'CPU s / 1M':>12}")
    for readers in args.readers:
        for sample in (worker_read(table, readers), psql_copy(table, readers)):
            print(sample.line(), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
