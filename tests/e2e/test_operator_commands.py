"""`etl-worker runs` against the BigQuery emulator and `etl-worker watch` against the Pub/Sub emulator."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from google.cloud import pubsub_v1
from rich.console import Console

from devstack.emulators import Emulator
from tests import forkserver
from tests.e2e.stack import make_settings, settings_env, settings_from_env
from worker.app import build_handler, build_sink
from worker.commands.replay import Selection, replay
from worker.commands.runs import runs_table
from worker.commands.topology import setup
from worker.commands.watch import watch
from worker.errors import SourceConnectionError, SourceSchemaError
from worker.events import Counters, MemoryEventBus, PubSubEventBus, RunEvents
from worker.handlers.base import Delivery, Outcome


def sqlite_source(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, at DATETIME)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                         [(i, f"item {i}", f"2024-01-0{1 + i % 5} 10:00:00") for i in range(12)])
    return path


def request(path: Path, data_source_id: int, etl_run_id: int, load_type: str) -> bytes:
    body: dict[str, Any] = {
        "data_source_id": data_source_id, "etl_run_id": etl_run_id, "source_type": "sqlite",
        "connection_params": {"database": str(path)}, "source_table_name": "items",
        "dest_table_name": f"items_{data_source_id}", "load_type": load_type}
    if load_type == "transactional":
        body |= {"timestamp_column": "at", "historical_start_date": "2024-01-02"}
    return json.dumps(body).encode()


def test_runs_lists_committed_runs_newest_first_and_filters_by_data_source(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, tmp_path: Path
) -> None:
    env = settings_env(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset)
    settings = settings_from_env(env)
    sink = build_sink(settings)
    assert sink.recent_entries(10) == []  # no ledger yet: nothing, and nothing created
    # Given three committed runs of two data sources
    path = sqlite_source(tmp_path / "shop.sqlite")
    bus = MemoryEventBus()
    handler = build_handler(settings, bus)
    for ds, run, mode in ((1, 901, "catalog"), (2, 902, "transactional"), (1, 903, "catalog")):
        outcome = handler.handle(Delivery(request(path, ds, run, mode), f"m{run}"), threading.Event())
        assert outcome is Outcome.ACK and bus.events[-1].event_type == "run.completed", bus.events[-1]

    # When they are listed
    entries = sink.recent_entries(10)
    # Then newest first, and a data source's filter keeps only its runs
    assert [e.run_id for e in entries] == ["etl-run-903", "etl-run-902", "etl-run-901"]
    assert [e.run_id for e in sink.recent_entries(1)] == ["etl-run-903"]
    assert [e.run_id for e in sink.recent_entries(10, data_source_id=1)] == ["etl-run-903", "etl-run-901"]
    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(runs_table(entries))
    text = console.export_text()
    assert "transactional" in text and "at: [2024-01-02" in text and "whole table" in text

    # And the CLI shows the same, as an operator runs it
    result = forkserver.run([sys.executable, "-m", "worker", "runs", "--data-source-id", "2"],
                            env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "etl-run-902" in result.stdout and "etl-run-901" not in result.stdout
    rows = next(line for line in result.stdout.splitlines() if "etl-run-902" in line)
    assert "committed" in rows and "transactional" in rows and "items_2" in rows


def test_watch_follows_one_run_until_it_ends_and_removes_its_subscription(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str
) -> None:
    settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset)
    setup(settings)
    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    ready, stop = threading.Event(), threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(watch(
        settings, run_id="etl-run-77", console=console, stop=stop, ready=ready)), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        # When the worker publishes another run's events and then the followed run's whole life
        bus = PubSubEventBus(settings.gcp_project_id, settings.etl_events_topic)
        other = events(bus, "etl-run-78")
        other.started("postgresql", "public.other")
        followed = events(bus, "etl-run-77")
        followed.started("postgresql", "public.orders")
        followed.progress(Counters(rows_extracted=120), force=True)
        followed.failed(SourceConnectionError("connection refused"), Counters(rows_extracted=120))
        retried = events(bus, "etl-run-77", attempt=2)
        retried.started("postgresql", "public.orders")
        retried.failed(SourceSchemaError("column 'nope' not found in source table public.orders"), Counters())
        # Then watch exits by itself once the run has failed for good
        thread.join(timeout=60)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert codes == [0]
    text = console.export_text()
    assert "etl-run-77" in text and "etl-run-78" not in text
    assert "✗ SourceSchemaError: column 'nope' not found" in text
    # And its own subscription is gone
    subscriber = pubsub_v1.SubscriberClient()
    topic = subscriber.topic_path(settings.gcp_project_id, settings.etl_events_topic)
    names = list(pubsub_v1.PublisherClient().list_topic_subscriptions(topic=topic))
    assert not [name for name in names if "-watch-" in name], names


def events(bus: PubSubEventBus, run_id: str, attempt: int = 1) -> RunEvents:
    return RunEvents(bus, run_id=run_id, attempt=attempt, data_source_id=7, etl_run_id=None,
                     dest_table="orders", load_type="catalog", progress_interval_s=0)



def test_replay_and_watch_before_setup_say_so(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str
) -> None:
    settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset)
    out = io.StringIO()
    assert replay(settings, Selection(everything=True), dry_run=False, out=out) == 2
    assert "run `etl-worker setup` first" in out.getvalue()
    console = Console(record=True, width=120, file=open(os.devnull, "w"))  # noqa: SIM115
    assert watch(settings, run_id=None, console=console) == 2
    assert "run `etl-worker setup` first" in console.export_text()
