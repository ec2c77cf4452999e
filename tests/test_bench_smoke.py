"""`make bench` stays runnable: a smoke run on 10k rows (no timings are asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_prints_the_table() -> None:
    # dlt is a bench-only extra: the smoke run measures the worker against the dumps only
    done = subprocess.run(
        [sys.executable, "-m", "bench.extract", "--quick", "--paths", "dump,worker", "--no-e2e"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| rows | database | path | rows/s (median) |" in done.stdout
    assert "| 10,000 | postgresql | worker |" in done.stdout and "| 10,000 | mysql | worker |" in done.stdout
