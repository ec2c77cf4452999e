"""Binlog CDC under writers (MariaDB): a seeded writer inserts, updates (the same row several times
in one transaction), re-keys and deletes rows, keeps a long transaction open across runs and
truncates the table, while cdc runs go on, the first one included (its snapshot and the binlog
position it matches must meet without gap or overlap); after the last run the destination equals
the source, by key, every column. Run twice: with MariaDB's snapshot position, and as MySQL
opens its snapshot (under FLUSH TABLES WITH READ LOCK, at SHOW MASTER STATUS).

ETL_CDC_SEED replays another draw of the writer's operations (the interleaving with the runs is
the machine's); the size is WRITER_TRANSACTIONS transactions over RUNS runs (printed)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.cdc.binlog_source import BinlogSource, binlog_source
from tests.cdc.test_cdc_mariadb import cdc, completed, dest, seed, source_rows
from tests.e2e.oneshot import RunOnce
from worker.cdc import mysql as cdc_mysql

__all__ = ["binlog_source"]
SEED = int(os.environ.get("ETL_CDC_SEED", "20261202"))
WRITER_TRANSACTIONS = 1000
RUNS = 8
LONG_IDS = range(1_000_000, 1_000_020)  # the long transaction's own rows: no lock waits on others


class Writer(threading.Thread):
    def __init__(self, source: BinlogSource, seed: int) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.rng = random.Random(seed)
        self.live: set[int] = set(range(1, 101))
        self.next_id = 101
        self.transactions = 0
        self.error: BaseException | None = None
        self.engine = sa.create_engine(source.url, isolation_level="READ COMMITTED")

    def run(self) -> None:
        try:
            long_conn = self.engine.connect()
            long_tx = long_conn.begin()
            self._write(long_conn, f"INSERT INTO {self._table} (id, name, qty) SELECT seq, 'long', 0 "
                        f"FROM seq_{LONG_IDS.start}_to_{LONG_IDS.stop - 1}")
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
        return f"`{self.source.schema}`.items"

    def _write(self, conn: sa.Connection, statement: str, **params: Any) -> None:
        conn.execute(sa.text(statement), params)

    def _one_change(self, conn: sa.Connection) -> None:
        kind = self.rng.choices(["insert", "update", "update_twice", "delete", "rekey"], [4, 4, 2, 1, 1])[0]
        if kind == "insert" or not self.live:
            self._write(conn, f"INSERT INTO {self._table} VALUES (:id, :name, :qty, :price, :doc, :body, "
                        ":flags, UTC_TIMESTAMP(6))", id=self.next_id, name=f"n{self.next_id}",
                        qty=self.rng.randint(0, 99), price=self.rng.randint(0, 10**6) / 100,
                        doc=json.dumps({"k": self.rng.randint(0, 9)}),
                        body=self.rng.choice([None, "short", ""]),
                        flags=self.rng.choice([None, "", "a", "b,c"]))
            self.live.add(self.next_id)
            self.next_id += 1
            return
        key = self.rng.choice(sorted(self.live))
        if kind == "delete":
            self._write(conn, f"DELETE FROM {self._table} WHERE id = :id", id=key)
            self.live.discard(key)
        elif kind == "rekey":
            self._write(conn, f"UPDATE {self._table} SET id = :new WHERE id = :id", id=key, new=self.next_id)
            self.live.discard(key)
            self.live.add(self.next_id)
            self.next_id += 1
        else:
            for _ in range(2 if kind == "update_twice" else 1):
                self._write(conn, f"UPDATE {self._table} SET qty = qty + 1, name = :name, "
                            "updated_at = UTC_TIMESTAMP(6) WHERE id = :id", id=key,
                            name=f"u{self.rng.randint(0, 999)}")


@pytest.mark.parametrize("server", ["mariadb", "mysql"])
def test_binlog_cdc_runs_during_random_writes_end_with_the_source_exactly(
    server: str, binlog_source: BinlogSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if server == "mysql":  # MySQL's snapshot: under a brief global read lock, at SHOW MASTER STATUS
        monkeypatch.setattr(cdc_mysql.Server, "mariadb", property(lambda self: False))
    # Given a table of 100 rows and a writer changing it at random from before the first cdc run
    seed(binlog_source, 100)
    writer = Writer(binlog_source, SEED)
    writer.start()
    # When cdc runs follow one another, the first loading the snapshot while the writer goes on
    reports = [cdc(completed(run_once(binlog_source.request(), "random-0")))]
    for number in range(1, RUNS + 1):
        reports.append(cdc(completed(run_once(binlog_source.request(), f"random-{number}"))))
        if not writer.is_alive():
            break
        time.sleep(0.5)
    writer.join(timeout=300)
    assert not writer.is_alive() and writer.error is None, writer.error
    reports.append(cdc(completed(run_once(binlog_source.request(), "random-last"))))
    # Then the destination equals the source, by key, every column
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source), f"seed {SEED}"
    # And consecutive runs read consecutive ranges of the binlog, the first from its snapshot's
    assert reports[0]["snapshot"] and not any(r["snapshot"] for r in reports[1:])
    assert [r["start"] for r in reports[1:]] == [r["end"] for r in reports[:-1]]
    assert sum(r["truncates"] for r in reports) == 1
    changes = sum(r["inserts"] + r["updates"] + r["deletes"] for r in reports[1:])
    print(f"{server}, seed {SEED}: {writer.transactions} transactions, {changes} changes in "
          f"{len(reports)} runs")
