"""`reconcile_deletes`' cost: the key pass of a reconciling merge, on the bench tables.

    .venv/bin/python -m bench.reconcile                         # 1M and 5M rows, PostgreSQL and MariaDB
    .venv/bin/python -m bench.reconcile --rows 100000 --rounds 1

Each round runs the key pass (snapshot, COUNT(*), every `id` streamed and spooled to Parquet parts,
as the runner stages them) in its own process; the table shows keys per second (median over rounds)
and peak RSS (the maximum). The staging loads and the commit's NOT EXISTS run in BigQuery and are
not measured here: the emulator's timings say nothing about BigQuery's.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from bench.datasets import ensure_tables
from bench.extract import load_average, machine
from bench.measure import run_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated table sizes")
    parser.add_argument("--dialects", default="postgresql,mysql")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    print(f"load average before: {load_average()}", flush=True)
    print("| rows | dialect | keys/s | seconds | peak RSS MiB |\n|---|---|---|---|---|", flush=True)
    for rows in (int(r) for r in args.rows.split(",")):
        for table in ensure_tables(rows, args.dialects.split(",")):
            samples = [run_path("keys", table, args.batch_rows) for _ in range(args.rounds)]
            seconds = statistics.median(s.seconds for s in samples)
            rss = max((s.peak_rss_kib or 0) for s in samples) / 1024
            print(f"| {rows:,} | {table.dialect} | {rows / seconds:,.0f} | {seconds:.2f} | {rss:.0f} |",
                  flush=True)
    print(f"load average after: {load_average()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
