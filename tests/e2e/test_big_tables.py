"""Big tables end to end (source → real runner → BigQuery emulator, no Pub/Sub): a window above
ETL_CHUNK_ROWS committed in sub-windows, read by ETL_READERS_PER_RUN parallel readers (PostgreSQL;
MariaDB reads with its one connection), in transactional and merge mode, then a second run; a
catalog table above ETL_CHUNK_ROWS read in key chunks (1 and 2 readers, also under a concurrent
writer), and one at or below it on the unchunked path."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import Emulator
from tests.e2e.sources import SeededSource, normalise, orders_table
from tests.e2e.stack import bq_rows, make_settings
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.ledger import LedgerEntry
from worker.messages import Event
from worker.sinks.bigquery import BigQuerySink


def run(pubsub: Emulator, bq: Emulator, dataset: str, body: dict[str, Any], run_id: str,
        **settings_overrides: Any) -> list[Event]:
    values: dict[str, Any] = {"ETL_BATCH_SIZE": 40, "ETL_PART_ROWS": 60, "ETL_CHUNK_ROWS": 100,
                              "ETL_READERS_PER_RUN": 3, **settings_overrides}
    settings = make_settings(pubsub.host_port, bq.host_port, dataset, **values)
    bus = MemoryEventBus()
    handler = build_handler(settings, bus, Redelivery(redelivers=False))
    delivery = Delivery(data=json.dumps(body).encode(), message_id=run_id, attributes={"run_id": run_id})
    assert handler.handle(delivery, threading.Event()) is Outcome.ACK, bus.events[-1]
    return bus.events


@pytest.mark.parametrize("orders_source", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize("load_type", ["transactional", "merge"])
def test_a_big_window_read_in_parallel_commits_in_sub_windows_and_copies_the_source_exactly(
    load_type: str, orders_source: SeededSource, pubsub_emulator: Emulator, bq_emulator: Emulator,
    bq_dataset: str, bq_client: bigquery.Client,
) -> None:
    # When 250 rows are read in one window with sub-windows of at most 100 rows
    events = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request(load_type), "big-1")
    completed = events[-1]
    assert completed.event_type == "run.completed", completed
    assert (completed.rows_loaded, completed.sub_windows) == (250, 3)
    progress = [e.sub_window for e in events if e.event_type == "run.progress"]
    assert {1, 2, 3} <= set(progress)
    # In the order they were published, the events' seq rises (run.completed's seq is reserved
    # with the run's ledger entry, after the last "committing" event's)
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    # and their durations never go back (run.completed's is BigQuery's clock at the commit)
    assert [e.duration_seconds for e in events] == sorted(e.duration_seconds for e in events)
    # Then the destination equals the source
    copied = [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")]
    assert copied == orders_source.rows()
    # And the next run, below the threshold, takes its one commit from the run's high
    orders_source.insert_now(1001, 5)
    again = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request(load_type), "big-2")[-1]
    assert again.event_type == "run.completed" and again.sub_windows is None
    assert again.window_low == completed.window_high
    assert [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")] == orders_source.rows()


@pytest.mark.parametrize("orders_source", ["postgresql"], indirect=True)
def test_run_completed_counts_its_duration_from_where_the_delivery_started(
    orders_source: SeededSource, pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a ledger look-up (before the attempt starts) that takes 0.3 s
    slow_s, find_job = 0.3, BigQuerySink.find_job

    def slow_find_job(self: BigQuerySink, run_id: str) -> tuple[LedgerEntry, ...]:
        time.sleep(slow_s)
        return find_job(self, run_id)

    monkeypatch.setattr(BigQuerySink, "find_job", slow_find_job)
    # When a window is committed in sub-windows
    events = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request("transactional"), "clock-1")
    # Then run.completed's duration (BigQuery's clock at the commit, less the ledger's started_at)
    # counts the look-up, as every progress event published before it does
    completed, progress = events[-1], [e for e in events if e.event_type == "run.progress"]
    assert completed.event_type == "run.completed", completed
    assert progress[0].duration_seconds >= slow_s
    assert completed.duration_seconds >= max(e.duration_seconds for e in progress)


def dataset_tables(client: bigquery.Client, dataset: str) -> set[str]:
    return {table.table_id for table in client.list_tables(f"{client.project}.{dataset}")}


@pytest.mark.parametrize("orders_source", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize("readers", [1, 2])
def test_a_big_catalog_table_is_read_in_key_chunks_and_replaces_the_destination_exactly_once(
    readers: int, orders_source: SeededSource, pubsub_emulator: Emulator, bq_emulator: Emulator,
    bq_dataset: str, bq_client: bigquery.Client, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.sources.sqlalchemy_source")
    # Given a destination holding an older copy with a row the source no longer has
    orders_source.insert(900, 1)
    first = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request("catalog"), "cat-0",
                ETL_CHUNK_ROWS=0)[-1]
    assert first.event_type == "run.completed" and first.rows_loaded == 251
    orders = orders_table(orders_source.schema)
    with orders_source.engine.begin() as conn:
        conn.execute(orders.delete().where(orders.c.id == 900))
    # When 250 rows are read in key chunks of at most 100 rows (3 chunks)
    events = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request("catalog"), "cat-1",
                 ETL_READERS_PER_RUN=readers)
    completed = events[-1]
    assert completed.event_type == "run.completed", completed
    assert (completed.rows_loaded, completed.source_row_count) == (250, 250)
    progress = [e for e in events if e.event_type == "run.progress" and e.chunk is not None]
    assert {e.chunk for e in progress} == {1, 2, 3} and {e.chunks for e in progress} == {3}
    assert ("key ranges of" in caplog.text) is (readers > 1)  # 2 readers: the parallel path
    # Then the destination equals the source, each row once, and the run's own tables are gone
    copied = [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")]
    assert copied == orders_source.rows()
    assert not {name for name in dataset_tables(bq_client, bq_dataset) if name.startswith("_etl_staging")}


@pytest.mark.parametrize("orders_source", ["postgresql", "mysql"], indirect=True)
def test_a_catalog_table_at_the_threshold_keeps_the_unchunked_path(
    orders_source: SeededSource, pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str,
    bq_client: bigquery.Client,
) -> None:
    events = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request("catalog"), "cat-small",
                 ETL_CHUNK_ROWS=250)
    assert events[-1].event_type == "run.completed" and events[-1].rows_loaded == 250
    assert all(e.chunk is None for e in events if e.event_type == "run.progress")
    assert "key chunks" not in "".join(str(e) for e in events)
    assert [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")] == orders_source.rows()


class Writer:
    """Updates, deletes and inserts rows of `orders`, one per transaction, while a run reads;
    every version each key had (None: absent) is kept."""

    def __init__(self, source: SeededSource) -> None:
        self.source = source
        self.table = orders_table(source.schema)
        self.versions: dict[int, list[tuple[Any, ...] | None]] = {
            row[0]: [row] for row in source.rows()}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._write, name="writer", daemon=True)

    def _write(self) -> None:
        for step in itertools.count():
            if self.stop.is_set():
                return
            key = 1 + (step * 37) % 250
            with self.source.engine.begin() as conn:
                if step % 3 == 0:
                    conn.execute(self.table.update().where(self.table.c.id == key).values(qty=1000 + step))
                elif step % 3 == 1:
                    conn.execute(self.table.delete().where(self.table.c.id == key))
                else:
                    key = 1000 + step
                    self.versions.setdefault(key, [None])
                    self.source.insert(key, 1)
            self._record(key)
            time.sleep(0.02)

    def _record(self, key: int) -> None:
        with self.source.engine.connect() as conn:
            got = conn.execute(sa.select(self.table).where(self.table.c.id == key)).first()
        self.versions.setdefault(key, []).append(normalise(tuple(got)) if got is not None else None)


@pytest.mark.parametrize(("orders_source", "readers"), [("postgresql", 1), ("mysql", 2)],
                         indirect=["orders_source"])
def test_a_chunked_catalog_run_under_a_concurrent_writer_holds_each_key_once_as_of_some_moment(
    readers: int, orders_source: SeededSource, pubsub_emulator: Emulator, bq_emulator: Emulator,
    bq_dataset: str, bq_client: bigquery.Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a writer changing the table while a chunked run reads it (each batch slowed down)
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_SLOW_BATCH_SECONDS", "0.15")
    writer = Writer(orders_source)
    writer.thread.start()
    try:
        events = run(pubsub_emulator, bq_emulator, bq_dataset, orders_source.request("catalog"), "cat-w",
                     ETL_READERS_PER_RUN=readers)
    finally:
        writer.stop.set()
        writer.thread.join()
    completed = events[-1]
    assert completed.event_type == "run.completed" and any(
        e.event_type == "run.progress" and e.chunk == 3 for e in events)
    # Then the destination holds each key once, every row as one of the versions its key had
    # while the run read (docs/modes.md: each chunk as of its own snapshot), and nothing else
    copied = [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")]
    keys = [row[0] for row in copied]
    assert len(keys) == len(set(keys)) == completed.rows_loaded
    by_key = {row[0]: row for row in copied}
    changed = {key for key, versions in writer.versions.items() if len(versions) > 1}
    assert len(changed) > 10, "the writer changed rows while the run read"
    for key, versions in writer.versions.items():
        assert by_key.get(key) in versions, (key, by_key.get(key), versions)
