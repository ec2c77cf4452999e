"""`make bench` stays runnable: a smoke run on 10k rows (no timings are asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests import forkserver

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_prints_the_table() -> None:
    # dlt is a bench-only extra: the smoke run measures the worker against the dumps only
    done = forkserver.run(
        [sys.executable, "-m", "bench.extract", "--quick", "--paths", "dump,worker", "--no-e2e"],
        cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| rows | database | path | rows/s (median) |" in done.stdout
    assert "| 10,000 | postgresql | worker |" in done.stdout and "| 10,000 | mysql | worker |" in done.stdout


def _smoke(*argv: str) -> str:
    done = forkserver.run([sys.executable, "-m", *argv], cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_parallel_readers_bench_quick_prints_every_parallelism() -> None:
    out = _smoke("bench.parallel", "--quick", "--readers", "1", "2")
    assert "CPU s / 1M" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith(("worker ", "psql "))] == [
        ["worker", "1", "10000"], ["psql", "1", "10000"], ["worker", "2", "10000"], ["psql", "2", "10000"]]


def test_mysql_speed_bench_quick_prints_the_floor_and_the_ranges() -> None:
    # --quick runs no dlt (a bench-only extra); the ranged reader must read every row once
    out = _smoke("bench.mysql_speed", "--quick", "--readers", "1", "2")
    assert "| rows | worker rows/s | worker s |" in out and "| 10,000 |" in out
    ranged = [line for line in out.splitlines() if line.startswith("| worker-ranges |")]
    assert [line.split("|")[2].strip() for line in ranged] == ["1", "2"]
    assert "-core ceiling (range) |" in out  # the floor table's CPU bound
    stages = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert {"fetch", "convert payload (JSON)", "Parquet", "all"} <= set(stages), out


def test_the_ranged_path_reads_every_row_once() -> None:
    import json

    from bench.datasets import ensure_tables

    (table,) = ensure_tables(10_000, ["mysql"])
    for readers in ("1", "3"):
        out = _smoke("bench.paths", "worker-ranges", "mysql", table.url, table.schema, table.table,
                     "--readers", readers, "--batch-rows", "777")
        assert json.loads(out.strip().splitlines()[-1])["rows"] == 10_000


def test_cdc_bench_quick_applies_every_change_on_both_change_logs() -> None:
    # Both dialects in one bench process: each on its own server, one BigQuery emulator for both
    out = _smoke("bench.cdc", "--quick", "--dialect", "postgresql", "--dialect", "mariadb")
    for dialect in ("postgresql", "mariadb"):
        assert f"{dialect} cdc run: 10000 changes applied" in out, out


def test_resume_bench_quick_resumes_a_catalog_run_in_key_chunks() -> None:
    # 20,000 rows in chunks of 5,000: killed at 70 %, the redelivery reads only the unfinished chunks
    out = _smoke("bench.resume", "--quick", "--mode", "catalog")
    assert "resumed copy: 20000 rows, 20000 distinct ids" in out
    lines = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert lines["redelivery"][-1] == "2/4" and lines["fresh full run, key chunks"][-1] == "4/4"
    assert "redelivery / fresh full run (key chunks): wall" in out
