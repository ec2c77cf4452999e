"""`make bench`: the worker's extraction against the database's own dump, dlt and a naive loop.

    .venv/bin/python -m bench.extract                 # 1M and 5M rows, 3 interleaved rounds, + end to end
    .venv/bin/python -m bench.extract --quick         # 10k rows, 1 round: a smoke run (seconds)
    .venv/bin/python -m bench.extract --rows 1000000 --rounds 5 --paths worker,dump
    .venv/bin/python -m bench.extract --rows 1000000 --paths worker,worker-measured --no-e2e
        # the data-quality measures' cost (worker-measured is not among the default paths)

Every path runs in its own process, one after another, round after round (interleaved, so a
machine that gets busier shifts every path alike); the table shows medians, peak RSS (the maximum
over rounds) and ratios taken within the same run. Python paths time themselves from connecting to
the last finished Parquet part; the dumps are timed from outside (their start-up is milliseconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from bench.datasets import BenchTable, ensure_tables
from bench.measure import Sample, run_dump, run_path

ALL_PATHS = ("dump", "worker", "naive", "raw", "dlt-pyarrow", "dlt-connectorx")
# Paths whose cost on 5M rows is minutes per round; larger tables run the others only.
SLOW_PATHS = ("naive", "raw", "dlt-pyarrow")
LARGE_ROWS = 1_000_000
DLT_PATHS = ("dlt-pyarrow", "dlt-connectorx")
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Row:
    rows: int
    dialect: str
    path: str
    rows_per_s: float | None
    seconds: float | None
    peak_rss_mib: float | None
    note: str = ""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = [10_000] if args.quick else [int(r) for r in args.rows.split(",")]
    rounds = 1 if args.quick else args.rounds
    dialects = args.dialects.split(",")
    paths = args.paths.split(",") if args.paths else list(ALL_PATHS)
    print(machine(), flush=True)
    print(f"load average before: {load_average()}", flush=True)
    results: list[Row] = []
    for rows in sizes:
        tables = ensure_tables(rows, dialects, recreate=args.recreate)
        large = rows > LARGE_ROWS and not args.all_paths_large
        chosen = [p for p in paths if not (large and p in SLOW_PATHS)]
        results += _measure(tables, chosen, rounds, args.batch_rows)
    print(f"load average after: {load_average()}", flush=True)
    print(render(results))
    if args.e2e and not args.quick:
        _end_to_end(results, dialects, args.e2e_rows, rounds)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1000000,5000000", help="table sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are shown)")
    parser.add_argument("--quick", action="store_true", help="10k rows, 1 round, no end to end")
    parser.add_argument("--dialects", default="postgresql,mysql,sqlite")
    parser.add_argument("--paths", help=f"comma-separated subset of {','.join(ALL_PATHS)}")
    parser.add_argument("--all-paths-large", action="store_true",
                        help=f"also run {','.join(SLOW_PATHS)} on tables above {LARGE_ROWS} rows")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--recreate", action="store_true", help="drop and generate the tables again")
    parser.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=True,
                        help="also time request → run.completed with the BigQuery emulator")
    parser.add_argument("--e2e-rows", type=int, default=1_000_000)
    return parser


def _measure(tables: list[BenchTable], paths: list[str], rounds: int, batch_rows: int) -> list[Row]:
    samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    failed: dict[tuple[str, str], str] = {}
    for round_no in range(1, rounds + 1):
        for table in tables:
            for path in paths:
                key = (table.dialect, path)
                if key in failed:
                    continue
                try:
                    sample = run_dump(table) if path == "dump" else run_path(path, table, batch_rows)
                except RuntimeError as error:
                    failed[key] = _reason(str(error))
                    print(f"  {table.dialect} {path}: FAILED: {failed[key]}", flush=True)
                    continue
                samples[key].append(sample)
                rate = sample.rows / sample.seconds
                print(f"  round {round_no} {table.rows} {table.dialect:10} {path:15} {rate:10,.0f} rows/s  "
                      f"{_mib(sample.peak_rss_kib)} MiB", flush=True)
    rows = tables[0].rows
    made = [_row(rows, dialect, path, samples[(dialect, path)]) for (dialect, path) in samples]
    made += [Row(rows, dialect, path, None, None, None, reason) for (dialect, path), reason in failed.items()]
    return made


def _reason(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else "failed"


def _row(rows: int, dialect: str, path: str, samples: list[Sample]) -> Row:
    seconds = statistics.median(s.seconds for s in samples)
    rss = [s.peak_rss_kib for s in samples if s.peak_rss_kib is not None]
    read = samples[0].rows
    note = f"read {read} rows" if read != rows else ""
    return Row(rows, dialect, path, rows / seconds, seconds, _mib(max(rss)) if rss else None, note)


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def render(results: list[Row]) -> str:
    """The Markdown table: rows/s, % of the dump and x dlt's fastest backend, same run, same size."""
    by_key = {(r.rows, r.dialect, r.path): r for r in results}
    lines = [
        "| rows | database | path | rows/s (median) | s | % of dump | x best dlt | peak RSS MiB | note |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    order = {path: i for i, path in enumerate(ALL_PATHS)}
    for r in sorted(results, key=lambda r: (r.rows, r.dialect, order.get(r.path, 99))):
        dump = by_key.get((r.rows, r.dialect, "dump"))
        dlt = [rate for p in DLT_PATHS if (rate := _rate(by_key.get((r.rows, r.dialect, p)))) is not None]
        lines.append(
            f"| {r.rows:,} | {r.dialect} | {r.path} | {_num(r.rows_per_s, ',.0f')} | "
            f"{_num(r.seconds, '.2f')} | "
            f"{_ratio(r.rows_per_s, dump.rows_per_s if dump else None, 100, '.0f')} | "
            f"{_ratio(r.rows_per_s, max(dlt) if dlt else None, 1, '.2f')} | {_num(r.peak_rss_mib, '.0f')} | "
            f"{r.note} |"
        )
    return "\n".join(lines)


def _rate(row: Row | None) -> float | None:
    return row.rows_per_s if row is not None else None


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(value: float | None, base: float | None, scale: float, spec: str) -> str:
    return "-" if value is None or not base else format(value / base * scale, spec)


def _end_to_end(results: list[Row], dialects: list[str], rows: int, rounds: int) -> None:
    from bench.e2e import run_end_to_end
    from bench.paths import PART_ROWS

    print(f"\nend to end, {rows:,} rows: etl-worker run → run.completed, BigQuery emulator as the sink, "
          f"median of {rounds}")
    print("| database | extraction alone s (median above) | request → run.completed s | ratio | wall s | "
          "peak RSS MiB |\n|---|---:|---:|---:|---:|---:|")
    for dialect in dialects:
        (table,) = ensure_tables(rows, [dialect])
        alone = next((r.seconds for r in results
                      if r.rows == rows and r.dialect == dialect and r.path == "worker"), None)
        try:
            runs = run_end_to_end(table, PART_ROWS, rounds)
        except RuntimeError as error:
            print(f"| {dialect} | {_num(alone, '.2f')} | FAILED: {_reason(str(error))} | | | |")
            continue
        run_s = statistics.median(r.run_s for r in runs)
        wall_s = statistics.median(r.wall_s for r in runs)
        rss = max((r.peak_rss_kib for r in runs if r.peak_rss_kib is not None), default=None)
        print(f"| {dialect} | {_num(alone, '.2f')} | {run_s:.2f} | {_ratio(run_s, alone, 1, '.2f')} | "
              f"{wall_s:.2f} | {_num(_mib(rss), '.0f')} |", flush=True)


def machine() -> str:
    return (f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"{_mem_gib()} GiB, Python {platform.python_version()}, {platform.platform()}")


def _mem_gib() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return f"{kib / 2**20:.0f}"
    except (OSError, ValueError, IndexError):
        return "?"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
