"""Run one measured path in a child process; its time, rows and peak RSS.

Peak RSS comes from GNU time (`/usr/bin/time -v`: the child's maximum resident set size) when the
machine has it, else from the kernel's rusage of waited-for children (same number, coarser).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import BenchTable

GNU_TIME = "/usr/bin/time"
_RSS_LINE = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


@dataclass(frozen=True)
class Sample:
    path: str
    dialect: str
    rows: int
    seconds: float
    peak_rss_kib: int | None
    spool_part_bytes: int = 0
    cpu_s: float | None = None  # the measured part's CPU, every thread (Python paths only)


def peak_rss_kib(time_file: Path) -> int | None:
    found = _RSS_LINE.search(time_file.read_text(errors="replace"))
    return int(found.group(1)) if found else None


def run_path(path: str, table: BenchTable, batch_rows: int, extra: Sequence[str] = ()) -> Sample:
    """A Python path (bench/paths.py) in a child: it times itself from connect to last part."""
    argv = [sys.executable, "-m", "bench.paths", path, table.dialect, table.url, table.schema, table.table,
            "--batch-rows", str(batch_rows), *extra]
    out, _seconds, rss = _run(argv, stdout_to_null=False)
    result = json.loads(out.strip().splitlines()[-1])
    return Sample(path, table.dialect, int(result["rows"]), float(result["seconds"]), rss,
                  int(result.get("spool_part_bytes", 0)), result.get("cpu_s"))


def run_dump(table: BenchTable) -> Sample:
    """The database's own client dumping the table to /dev/null, timed from outside."""
    _out, seconds, rss = _run(dump_argv(table), stdout_to_null=True)
    return Sample("dump", table.dialect, table.rows, seconds, rss)


def dump_argv(table: BenchTable) -> list[str]:
    from sqlalchemy import make_url

    url = make_url(table.url)
    if table.dialect == "postgresql":
        query = f"COPY (SELECT * FROM {table.qualified}) TO STDOUT"
        return ["psql", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "",
                "-d", url.database or "", "-X", "-q", "-c", query]
    if table.dialect == "sqlite":
        return ["sqlite3", "-readonly", url.database or "", f"SELECT * FROM {table.table}"]
    return ["mysql", f"-h{url.host or '127.0.0.1'}", f"-P{url.port or 3306}", f"-u{url.username}", "--quick",
            "-e", f"SELECT * FROM {table.schema}.{table.table}"]


def _run(argv: list[str], stdout_to_null: bool) -> tuple[str, float, int | None]:
    with tempfile.TemporaryDirectory(prefix="etl-bench-time-") as scratch:
        time_file = Path(scratch) / "time.txt"
        use_gnu_time = os.path.exists(GNU_TIME)
        full = [GNU_TIME, "-v", "-o", str(time_file), *argv] if use_gnu_time else argv
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run(full, stdout=subprocess.DEVNULL if stdout_to_null else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-3000:]}")
        if use_gnu_time:
            rss = peak_rss_kib(time_file)
        else:  # the maximum over all children so far: right only when it grew with this one
            after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            rss = after if after > before else None
        return done.stdout or "", seconds, rss
