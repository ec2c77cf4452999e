"""`merge` with `reconcile_deletes` under a concurrent writer that inserts, updates (the same row twice
in one transaction, too) and hard-deletes rows, with transactions that commit late inside the lag,
while merge runs execute. After the writer stops and a last run, BigQuery equals the source exactly:
by key, every column. Seeded and reproducible (SEED, with the flavour's name).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.e2e.sources import normalise
from tests.faults.background import TableWriter, running
from tests.faults.test_windows_and_readers import (
    FLAVOURS,
    LAG_S,
    LATE_COMMIT_MAX_S,
    Flavour,
    make_handler,
    quoted,
    request_body,
    run_once,
)

__all__ = ["make_handler"]  # the fixture
SEED = 20261201
RUNS = 5
MERGE_FLAVOURS = [f for f in FLAVOURS if f.name in ("pg-timestamptz", "mysql-datetime")]


@pytest.fixture(params=MERGE_FLAVOURS, ids=lambda f: f.name)
def flavour_db(request: pytest.FixtureRequest) -> tuple[Flavour, sa.Engine, str]:
    flavour: Flavour = request.param
    if flavour.dialect == "postgresql":
        return flavour, request.getfixturevalue("pg_admin"), request.getfixturevalue("pg_schema")
    return flavour, request.getfixturevalue("mysql_admin"), request.getfixturevalue("mysql_db")


class ChangingWriter(TableWriter):
    """Inserts, updates and deletes until stopped; counts what it did."""

    def __init__(self, engine: sa.Engine, table: str, clock_sql: str, rng: random.Random) -> None:
        super().__init__(engine, table, clock_sql, rng)
        self.done = {"insert": 0, "update": 0, "update twice": 0, "delete": 0}

    def once(self) -> None:
        kind = self.rng.choice(["insert", "insert", "update", "update twice", "delete"])
        if kind != "insert" and self.next_id < 5:
            kind = "insert"
        late_s = self.rng.choice([0.0, 0.0, self.rng.uniform(0, LATE_COMMIT_MAX_S)])
        with self.engine.connect() as conn, conn.begin():
            stamp = conn.exec_driver_sql(f"SELECT {self.clock_sql}").scalar_one()
            getattr(self, "change_" + kind.replace(" ", "_"))(conn, stamp)
            time.sleep(late_s)  # commits after its timestamp, inside the lag
        self.done[kind] += 1
        time.sleep(self.rng.uniform(0, 0.03))

    def change_insert(self, conn: sa.Connection, stamp: Any) -> None:
        count = self.rng.choice([1, 3, 10])
        first, self.next_id = self.next_id, self.next_id + count
        conn.execute(sa.text(f"INSERT INTO {self.table} (id, ts, val, note) VALUES (:id, :ts, 0, 'new')"),
                     [{"id": i, "ts": stamp} for i in range(first, first + count)])

    def change_update(self, conn: sa.Connection, stamp: Any) -> None:
        conn.execute(sa.text(f"UPDATE {self.table} SET val = val + 1, note = :note, ts = :ts WHERE id = :id"),
                     {"id": self._existing(), "ts": stamp, "note": f"n{self.rng.randint(0, 999)}"})

    def change_update_twice(self, conn: sa.Connection, stamp: Any) -> None:
        victim = self._existing()
        for step in ("first", "second"):
            conn.execute(sa.text(f"UPDATE {self.table} SET val = val + 10, note = :note, ts = :ts "
                                 "WHERE id = :id"), {"id": victim, "ts": stamp, "note": step})

    def change_delete(self, conn: sa.Connection, stamp: Any) -> None:
        conn.execute(sa.text(f"DELETE FROM {self.table} WHERE id = :id"), {"id": self._existing()})

    def _existing(self) -> int:
        return self.rng.randrange(1, self.next_id)


def source_rows(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [normalise(tuple(r)) for r in conn.execute(sa.text(f"SELECT id, ts, val, note FROM {table} "
                                                                 "ORDER BY id"))]


def dest_rows(client: bigquery.Client, dataset: str) -> list[tuple[Any, ...]]:
    query = f"SELECT id, ts, val, note FROM `{PROJECT}.{dataset}.events` ORDER BY id"
    return [normalise(tuple(r.values())) for r in client.query(query).result()]


def test_merge_with_reconcile_keeps_a_changing_table_equal_to_the_source(
    flavour_db: tuple[Flavour, sa.Engine, str], make_handler: Callable[..., Any],
    bq_client: bigquery.Client, bq_dataset: str,
) -> None:
    flavour, engine, schema = flavour_db
    table = quoted(engine, schema, "events")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, "
                             f"ts {flavour.column_ddl} NOT NULL, val integer NOT NULL, note varchar(40))")
    rng = random.Random(f"{SEED}-{flavour.name}")
    handler = make_handler(ETL_INCREMENTAL_LAG=LAG_S)
    writer = ChangingWriter(engine, table, flavour.clock_sql, rng)

    def merge(run: int) -> Any:
        body = request_body(engine, schema, "merge", 700 + run, timestamp_column="ts",
                            historical_start_date="2000-01-01", reconcile_deletes=True)
        return run_once(handler, body)

    # Given a writer inserting, updating and deleting while merge runs execute
    completions = []
    with running(writer):
        for run in range(1, RUNS + 1):
            time.sleep(rng.uniform(0.2, 0.6))
            completions.append(merge(run))
    assert min(writer.done.values()) > 0, writer.done  # every kind of change really happened
    # When the writer has stopped and a last run covers everything up to now (past the lag)
    time.sleep(LAG_S + LATE_COMMIT_MAX_S)
    completions.append(merge(RUNS + 1))
    # Then the windows chained, and BigQuery equals the source exactly: by key, every column
    for earlier, later in itertools.pairwise(completions):
        assert later.window_low == earlier.window_high
    assert dest_rows(bq_client, bq_dataset) == source_rows(engine, table)
