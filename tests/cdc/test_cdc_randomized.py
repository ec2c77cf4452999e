"""CDC under writers: a seeded writer inserts, updates (the same row several times in one
transaction), deletes, keeps a long transaction open across runs and truncates the table, while
cdc runs go on; after the last run the destination equals the source, by key, every column.

ETL_CDC_SEED replays another draw of the writer's operations (the interleaving with the runs is
the machine's); the size is WRITER_TRANSACTIONS transactions over RUNS runs."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery

from tests.cdc.conftest import CdcSource
from tests.cdc.test_cdc_postgres import RANDOM_TEXT, completed, dest, source_rows
from tests.e2e.oneshot import RunOnce

SEED = int(os.environ.get("ETL_CDC_SEED", "20261202"))
WRITER_TRANSACTIONS = 1000
RUNS = 8
LONG_IDS = range(1_000_000, 1_000_020)  # the long transaction's own rows: no lock waits on others


class Writer(threading.Thread):
    def __init__(self, source: CdcSource, seed: int) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.rng = random.Random(seed)
        self.live: set[int] = set(range(1, 101))
        self.next_id = 101
        self.transactions = 0
        self.error: BaseException | None = None
        self.engine = sa.create_engine(source.server.url)

    def run(self) -> None:
        try:
            long_conn = self.engine.connect()
            long_tx = long_conn.begin()
            self._write(long_conn, f"INSERT INTO {self._table} (id, name, qty) SELECT g, 'long', 0 "
                        f"FROM generate_series({LONG_IDS.start}, {LONG_IDS.stop - 1}) g")
            truncate_at = WRITER_TRANSACTIONS * 2 // 3
            for number in range(WRITER_TRANSACTIONS):
                if number == WRITER_TRANSACTIONS // 2:  # the long transaction commits late
                    self._write(long_conn, f"UPDATE {self._table} SET qty = qty + 1 "
                                f"WHERE id >= {LONG_IDS.start}")
                    long_tx.commit()
                    long_conn.close()
                if number == truncate_at:
                    with self.engine.begin() as conn:
                        self._write(conn, f"TRUNCATE {self._table}")
                    self.live = set()
                    continue
                with self.engine.begin() as conn:
                    for _ in range(self.rng.randint(1, 6)):
                        self._one_change(conn)
                self.transactions += 1
                time.sleep(self.rng.random() * 0.01)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.engine.dispose()

    @property
    def _table(self) -> str:
        return f'"{self.source.schema}".items'

    def _write(self, conn: sa.Connection, statement: str, **params: Any) -> None:
        conn.execute(sa.text(statement), params)

    def _one_change(self, conn: sa.Connection) -> None:
        kind = self.rng.choices(["insert", "update", "update_twice", "delete", "toast"], [4, 4, 2, 1, 1])[0]
        if kind == "insert" or not self.live:
            self._write(conn, f"INSERT INTO {self._table} VALUES (:id, :name, :qty, :price, "
                        "CAST(:doc AS jsonb), :body, :tags, now())", id=self.next_id, name=f"n{self.next_id}",
                        qty=self.rng.randint(0, 99), price=self.rng.randint(0, 10**6) / 100,
                        doc=f'{{"k": {self.rng.randint(0, 9)}}}', body=self.rng.choice([None, "short"]),
                        tags=self.rng.choice([None, ["a"], ["b", "c"]]))
            self.live.add(self.next_id)
            self.next_id += 1
            return
        key = self.rng.choice(sorted(self.live))
        if kind == "delete":
            self._write(conn, f"DELETE FROM {self._table} WHERE id = :id", id=key)
            self.live.discard(key)
        elif kind == "toast":
            self._write(conn, f"UPDATE {self._table} SET body = {RANDOM_TEXT} WHERE id = :id", id=key)
        else:
            for _ in range(2 if kind == "update_twice" else 1):
                self._write(conn, f"UPDATE {self._table} SET qty = qty + 1, name = :name, updated_at = now() "
                            "WHERE id = :id", id=key, name=f"u{self.rng.randint(0, 999)}")


def test_cdc_runs_during_random_writes_end_with_the_source_exactly(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a table of 100 rows, loaded by the first cdc run
    cdc_source.execute("INSERT INTO {schema}.items SELECT g, 'n' || g, g, g, jsonb_build_object('g', g), "
                       "NULL, NULL, now() FROM generate_series(1, 100) g")
    completed(run_once(cdc_source.request(), "random-0"))
    # When a writer changes it at random while cdc runs follow one another
    writer = Writer(cdc_source, SEED)
    writer.start()
    reports = []
    for number in range(1, RUNS + 1):
        reports.append(completed(run_once(cdc_source.request(), f"random-{number}")).cdc)
        if not writer.is_alive():
            break
        time.sleep(0.5)
    writer.join(timeout=120)
    assert not writer.is_alive() and writer.error is None, writer.error
    reports.append(completed(run_once(cdc_source.request(), "random-last")).cdc)
    # Then the destination equals the source, by key, every column
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source), f"seed {SEED}"
    # And consecutive runs read consecutive ranges of the change log
    assert all(r is not None for r in reports)
    assert [r["start"] for r in reports[1:]] == [r["end"] for r in reports[:-1]]  # type: ignore[index]
    assert sum(r["truncates"] for r in reports) == 1  # type: ignore[index]
    changes = sum(r["inserts"] + r["updates"] + r["deletes"] for r in reports)  # type: ignore[index]
    print(f"seed {SEED}: {writer.transactions} transactions, {changes} changes in {len(reports)} runs")
