"""The data-quality measures' own cost, apart from the extraction they ride on.

    .venv/bin/python -m bench.quality                  # 1M rows, PostgreSQL and MariaDB
    .venv/bin/python -m bench.quality --rows 100000

`bench.extract --paths worker,worker-measured` compares two whole extractions, whose difference is
below the noise of a shared machine. This isolates the measures: the table's batches are read once
through the worker's source (timed: the extraction), then `Measures.add` runs over the same batches
(NULL counts and the cursor's min/max, as every run takes them) and its CPU time is reported as a
share of the extraction's wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import pyarrow as pa

from bench.datasets import BenchTable, ensure_tables
from bench.extract import load_average, machine

CURSOR = "created_at"


def read_batches(table: BenchTable, batch_rows: int) -> tuple[list[pa.RecordBatch], float]:
    from bench.paths import catalog_request
    from worker.sources import get_source

    request = catalog_request(table.dialect, table.url, table.schema, table.table)
    started = time.perf_counter()
    with get_source(table.dialect).snapshot(request) as snapshot:
        batches = list(snapshot.iter_batches(None, batch_rows))
    return batches, time.perf_counter() - started


def measure_cpu_s(batches: list[pa.RecordBatch]) -> float:
    from worker.quality import Measures

    measures = Measures(cursor=CURSOR)
    started = time.process_time()
    for batch in batches:
        measures.add(batch)
    return time.process_time() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dialects", default="postgresql,mysql")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    print(f"load average before: {load_average()}", flush=True)
    print("| rows | dialect | extraction s | measures CPU ms (median) | share |\n|---|---|---|---|---|")
    for table in ensure_tables(args.rows, args.dialects.split(",")):
        batches, extraction_s = read_batches(table, args.batch_rows)
        cpu_s = statistics.median(measure_cpu_s(batches) for _ in range(args.rounds))
        print(f"| {args.rows:,} | {table.dialect} | {extraction_s:.2f} | {cpu_s * 1000:.1f} "
              f"| {cpu_s / extraction_s:.2%} |", flush=True)
    print(f"load average after: {load_average()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
