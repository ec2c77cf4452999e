"""Incremental windows under concurrent writers, and catalog replaces under a concurrent reader.

Runs go through the real handler (one-shot transport) against real PostgreSQL/MariaDB and the
BigQuery emulator; the transport is not the point here (the crash suite covers Pub/Sub).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import Emulator
from tests.conftest import PROJECT
from tests.e2e.sources import normalise
from tests.e2e.stack import make_settings
from tests.faults.background import Loop, TableWriter, running
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery
from worker.messages import RunCompleted

SEED = 20261125
LAG_S = 1.0
LATE_COMMIT_MAX_S = 0.5  # a writer's transaction commits at most this long after its timestamp
RUNS = 6


@dataclass(frozen=True)
class Flavour:
    """One cursor type on one database: how to create the table and stamp rows with the clock."""

    name: str
    dialect: str
    column_ddl: str
    clock_sql: str


FLAVOURS = [
    Flavour("pg-timestamptz", "postgresql", "timestamptz(6)", "now()"),
    Flavour("pg-timestamp", "postgresql", "timestamp(6)", "LOCALTIMESTAMP"),
    Flavour("mysql-datetime", "mysql", "datetime(6)", "NOW(6)"),
    Flavour("mysql-timestamp", "mysql", "timestamp(6) NULL", "NOW(6)"),
]


@pytest.fixture(params=FLAVOURS, ids=lambda f: f.name)
def flavour_db(request: pytest.FixtureRequest) -> tuple[Flavour, sa.Engine, str]:
    flavour: Flavour = request.param
    if flavour.dialect == "postgresql":
        return flavour, request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_schema")
    return flavour, request.getfixturevalue("mysql_admin"), request.getfixturevalue("mysql_db")


def quoted(engine: sa.Engine, *names: str) -> str:
    return ".".join(engine.dialect.identifier_preparer.quote(n) for n in names)


def request_body(engine: sa.Engine, schema: str, load_type: str, run: int, **extra: Any) -> bytes:
    url = engine.url
    database = schema if engine.dialect.name == "mysql" else url.database
    body = {"data_source_id": 5, "etl_run_id": run, "source_type": engine.dialect.name,
            "connection_params": {"host": url.host, "port": url.port, "database": database,
                                  "username": url.username, "password": ""},
            "schema_name": schema, "source_table_name": "events", "dest_table_name": "events",
            "load_type": load_type, **extra}
    return json.dumps(body).encode()


class Writer(TableWriter):
    """Inserts rows until stopped: bursts sharing one timestamp, and transactions that commit late."""

    def once(self) -> None:
        rows = self.rng.choice([1, 1, 3, 20])  # 20: many rows tied at one timestamp
        late_s = self.rng.choice([0.0, 0.0, self.rng.uniform(0, LATE_COMMIT_MAX_S)])
        first, self.next_id = self.next_id, self.next_id + rows
        with self.engine.connect() as conn, conn.begin():
            stamp = conn.exec_driver_sql(f"SELECT {self.clock_sql}").scalar_one()
            conn.execute(sa.text(f"INSERT INTO {self.table} (id, ts) VALUES (:id, :ts)"),
                         [{"id": i, "ts": stamp} for i in range(first, first + rows)])
            time.sleep(late_s)  # commits after its timestamp, inside the lag
        time.sleep(self.rng.uniform(0, 0.05))


def run_once(handler: Any, body: bytes) -> RunCompleted:
    bus: MemoryEventBus = handler._bus
    before = len(bus.events)
    handler.handle(Delivery(body, f"m-{time.monotonic_ns()}"), threading.Event())
    terminal = bus.events[-1]
    assert len(bus.events) > before and isinstance(terminal, RunCompleted), terminal
    return terminal


def dest_ids(client: bigquery.Client, dataset: str) -> list[int]:
    rows = client.query(f"SELECT id FROM `{PROJECT}.{dataset}.events` ORDER BY id").result()
    return [int(r["id"]) for r in rows]


@pytest.fixture
def make_handler(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Callable[..., Any]:
    def make(**overrides: Any) -> Any:
        settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                                 ETL_BATCH_SIZE=50, **overrides)
        return build_handler(settings, MemoryEventBus())
    return make


def test_windows_under_concurrent_writers_load_every_row_exactly_once(
    flavour_db: tuple[Flavour, sa.Engine, str], make_handler: Callable[..., Any],
    bq_client: bigquery.Client, bq_dataset: str,
) -> None:
    flavour, engine, schema = flavour_db
    table = quoted(engine, schema, "events")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, ts {flavour.column_ddl} NOT NULL)")
    rng = random.Random(f"{SEED}-{flavour.name}")  # replay a failure with the same seed
    handler = make_handler(ETL_INCREMENTAL_LAG=LAG_S)
    # Given a writer inserting tied and late-committing rows while transactional runs execute
    completions = []
    with running(Writer(engine, table, flavour.clock_sql, rng)):
        for run in range(1, RUNS + 1):
            time.sleep(rng.uniform(0.2, 0.8))
            body = request_body(engine, schema, "transactional", 600 + run, timestamp_column="ts",
                                historical_start_date="2000-01-01")
            completions.append(run_once(handler, body))
    # Then consecutive windows touch without overlapping
    for earlier, later in itertools.pairwise(completions):
        assert later.window_low == earlier.window_high
    # And the destination holds exactly the source rows below the last window's end
    high = completions[-1].window_high
    with engine.connect() as conn:
        expected = [r[0] for r in conn.execute(
            sa.text(f"SELECT id FROM {table} WHERE ts < :high ORDER BY id"), {"high": high})]
    assert len(expected) > RUNS  # the writer really wrote while the runs executed
    assert dest_ids(bq_client, bq_dataset) == expected
    assert sum(c.rows_loaded for c in completions) == len(expected)


# Six catalog snapshots of one table: overlapping ids, every row labelled and stamped by its snapshot,
# two of them the same size, so that a mix of two snapshots, a half-done replace or a stale one
# matches none of them (a count would not tell them apart).
SNAPSHOTS = [(1, 100), (51, 160), (1, 40), (101, 130), (21, 130), (1, 150)]  # (first id, rows)


def content(rows: list[tuple[Any, ...]]) -> str:
    """A table's whole content as one fingerprint: every value of every row, in id order."""
    return hashlib.sha256(repr(sorted(normalise(tuple(r)) for r in rows)).encode()).hexdigest()


class Reader(Loop):
    """Reads the whole destination again and again, one query each time; any error ends it (a
    missing table, a failed query)."""

    def __init__(self, client: bigquery.Client, dataset: str) -> None:
        super().__init__()
        self.client, self.query = client, f"SELECT id, ts, label FROM `{PROJECT}.{dataset}.events`"
        self.seen: list[str] = []  # the fingerprint of every read, in order
        self.reads = threading.Semaphore(0)  # released once per read (started and finished)

    def once(self) -> None:
        self.seen.append(content([tuple(r.values()) for r in self.client.query(self.query).result()]))
        self.reads.release()

    def ended_by_error(self) -> None:
        self.reads.release()  # a test waiting for a read hears of the error

    def read_once_more(self) -> None:
        """Wait for a read that started after this call (it sees the table as it is now, or later)."""
        while self.reads.acquire(blocking=False):  # reads that may have started earlier
            pass
        for _ in range(2):  # the one in flight, then one that starts after this call
            if self.error is not None:  # the test reports it
                return
            assert self.reads.acquire(timeout=60), "the reader stalled"


def test_a_reader_never_sees_a_partial_catalog_replace(
    pg_admin: sa.Engine, pg_schema: str, make_handler: Callable[..., Any], bq_client: bigquery.Client,
    bq_dataset: str,
) -> None:
    table = quoted(pg_admin, pg_schema, "events")
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, ts timestamptz, label text)")
    handler = make_handler()
    reader = Reader(bq_client, bq_dataset)
    committed: list[str] = []
    # Given a reader reading the whole destination again and again while catalog runs replace it
    try:
        for number, (first, rows) in enumerate(SNAPSHOTS, 1):
            with pg_admin.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM {table}")
                conn.exec_driver_sql(
                    f"INSERT INTO {table} SELECT g, timestamptz '2024-03-01 12:00:00.123456+00' "
                    f"+ g * interval '1 second' + {number} * interval '1 day', 'snapshot {number}' "
                    f"FROM generate_series({first}, {first + rows - 1}) g")
                source = [tuple(r) for r in conn.exec_driver_sql(f"SELECT id, ts, label FROM {table}")]
            committed.append(content(source))
            run_once(handler, request_body(pg_admin, pg_schema, "catalog", 700 + number))
            # (the destination exists from the first commit on: only then may the reader start)
            if number == 1:
                reader.start()
            # Every snapshot is read at least once, by a read that starts after its commit returned
            reader.read_once_more()
            assert reader.error is None, reader.error
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    # Then no read failed (a missing table is a failure, not a retry)
    assert reader.error is None, reader.error
    # And every read returned one committed snapshot, value for value: never a mix, a half-done
    # replace or an empty table; and never an older snapshot after a newer one
    order = [committed.index(seen) if seen in committed else -1 for seen in reader.seen]
    assert -1 not in order, f"a read matched no committed snapshot: {order}"
    assert order == sorted(order), order
    assert set(order) == set(range(len(SNAPSHOTS))), order
