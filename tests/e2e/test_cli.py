"""The CLI as an operator uses it: `setup` twice, and the one-shot `run --request FILE`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from devstack.emulators import Emulator
from tests.conftest import PROJECT, unique


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--no-json-logs", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, input=stdin,
                          timeout=120, check=False)


def base_env(pubsub: Emulator, bq: Emulator, dataset: str) -> dict[str, str]:
    names = unique("cli")
    return {"GCP_PROJECT_ID": PROJECT, "BIGQUERY_DATASET": dataset,
            "PUBSUB_EMULATOR_HOST": pubsub.host_port, "BIGQUERY_EMULATOR_HOST": bq.host_port,
            "ETL_REQUEST_TOPIC": f"{names}-req", "ETL_REQUEST_SUBSCRIPTION": f"{names}-sub",
            "ETL_EVENTS_TOPIC": f"{names}-ev", "ETL_DEAD_LETTER_TOPIC": f"{names}-dl",
            "ETL_PROGRESS_INTERVAL_SECONDS": "0", "ETL_BATCH_SIZE": "2", "ETL_RETRY_DELAY": "0.01"}


def test_setup_is_idempotent(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> None:
    env = base_env(pubsub_emulator, bq_emulator, bq_dataset)
    first, second = cli(env, "setup"), cli(env, "setup")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.count("created") == 5 and "found" not in first.stdout
    assert second.stdout.count("found") == 5 and "created" not in second.stdout
    assert f"{env['ETL_DEAD_LETTER_TOPIC']}-hold" in first.stdout


def sqlite_request(path: Path, **overrides: Any) -> dict[str, Any]:
    body = {"data_source_id": 3, "etl_run_id": 77, "source_type": "sqlite",
            "connection_params": {"database": str(path), "password": "pw-never-shown"},
            "source_table_name": "items", "dest_table_name": "items", "load_type": "catalog"}
    body.update(overrides)
    return body


def test_run_one_request_without_pubsub_prints_its_events(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, sqlite_path: Path,
    tmp_path: Path,
) -> None:
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.5) for i in range(5)])
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(sqlite_request(sqlite_path)))
    env = base_env(pubsub_emulator, bq_emulator, bq_dataset)

    result = cli(env, "run", "--request", str(request_file))

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event_type"] for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert kinds.count("run.progress") >= 3  # batches of 2 rows
    assert events[-1]["rows_loaded"] == 5 and events[-1]["run_id"] == "etl-run-77"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert "pw-never-shown" not in result.stdout + result.stderr


def test_run_reports_a_bad_request_and_exits_non_zero(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, tmp_path: Path
) -> None:
    env = base_env(pubsub_emulator, bq_emulator, bq_dataset)
    result = cli(env, "run", "--request", "-", stdin='{"data_source_id": 1, "etl_run_id": 5}')
    assert result.returncode == 1
    failed = json.loads(result.stdout.splitlines()[-1])
    assert failed["event_type"] == "run.failed" and failed["error"]["type"] == "MessageDecodeError"
    assert failed["run_id"] == "etl-run-5"


def test_run_with_console_exporters_writes_its_spans_and_metrics_to_stderr(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, sqlite_path: Path, tmp_path: Path,
) -> None:
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.execute("INSERT INTO items VALUES (1, 'one', 1.5)")
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(sqlite_request(sqlite_path)))
    env = {**base_env(pubsub_emulator, bq_emulator, bq_dataset),
           "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}

    result = cli(env, "run", "--request", str(request_file))

    assert result.returncode == 0, result.stderr
    # stdout stays the events, one JSON object per line; what the exporters held is flushed at exit
    assert [json.loads(line)["event_type"] for line in result.stdout.splitlines()][-1] == "run.completed"
    for name in ("etl.run", "etl.plan", "etl.stage", "etl.commit", "etl.report"):
        assert f'"name": "{name}"' in result.stderr, name
    assert '"name": "etl.runs"' in result.stderr and '"outcome": "committed"' in result.stderr


def test_an_unknown_exporter_is_one_line_and_exit_2(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str,
) -> None:
    env = {**base_env(pubsub_emulator, bq_emulator, bq_dataset), "OTEL_TRACES_EXPORTER": "zipkin"}
    result = cli(env, "run", "--request", "-", stdin="{}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("etl-worker: OTEL_TRACES_EXPORTER='zipkin': etl-worker knows otlp, "
                                     "console and none")
