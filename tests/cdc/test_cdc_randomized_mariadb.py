"""Binlog CDC under writers (MariaDB): a seeded writer inserts, updates (the same row several times
in one transaction), re-keys and deletes rows, keeps a long transaction open across runs and
truncates the table, while cdc runs go on, the first one included (its snapshot and the binlog
position it matches must meet without gap or overlap); after the last run the destination equals
the source, by key, every column. Run twice: with MariaDB's snapshot position, and as MySQL
opens its snapshot (under FLUSH TABLES WITH READ LOCK, at SHOW MASTER STATUS).

ETL_CDC_SEED replays another draw of the writer's operations (the interleaving with the runs is
the machine's); the size is WRITER_TRANSACTIONS transactions over RUNS runs (printed)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.cdc.binlog_source import BinlogSource, binlog_source
from tests.cdc.random_writer import (
    RandomWriter,
    assert_consecutive,
    changes,
    random_run_once,
    runs_while_writing,
)
from tests.cdc.test_cdc_mariadb import cdc, completed, dest, seed, source_rows
from tests.e2e.oneshot import RunOnce
from worker.cdc import mysql as cdc_mysql

__all__ = ["binlog_source", "random_run_once"]
SEED = int(os.environ.get("ETL_CDC_SEED", "20261202"))


class Writer(RandomWriter):
    """MariaDB's: its special change re-keys a row (a binlog update of the key itself)."""

    SPECIAL = "rekey"
    NOW = "UTC_TIMESTAMP(6)"
    LONG_ROWS = "SELECT seq, 'long', 0 FROM seq_{start}_to_{stop}"
    INSERT_VALUES = ":doc, :body, :flags, UTC_TIMESTAMP(6)"
    CHOICES = (("body", [None, "short", ""]), ("flags", [None, "", "a", "b,c"]))

    def special(self, conn: sa.Connection, key: int) -> None:
        self._write(conn, f"UPDATE {self.table} SET id = :new WHERE id = :id", id=key, new=self.next_id)
        self.live.discard(key)
        self.live.add(self.next_id)
        self.next_id += 1


@pytest.mark.parametrize("server", ["mariadb", "mysql"])
def test_binlog_cdc_runs_during_random_writes_end_with_the_source_exactly(
    server: str, binlog_source: BinlogSource, random_run_once: RunOnce, bq_client: bigquery.Client,
    bq_dataset: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if server == "mysql":  # MySQL's snapshot: under a brief global read lock, at SHOW MASTER STATUS
        monkeypatch.setattr(cdc_mysql.Server, "mariadb", property(lambda self: False))
    # Given a table of 100 rows and a writer changing it at random from before the first cdc run
    seed(binlog_source, 100)
    engine = sa.create_engine(binlog_source.url, isolation_level="READ COMMITTED")
    writer = Writer(engine, f"`{binlog_source.schema}`.items", SEED)
    writer.start()
    # When cdc runs follow one another, the first loading the snapshot while the writer goes on
    def run(name: str) -> dict[str, Any]:
        return cdc(completed(random_run_once(binlog_source.request(), name)))

    first = run("random-0")
    later = runs_while_writing(writer, run, join_s=300)
    reports = [first, *later]
    # Then the destination equals the source, by key, every column
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source), f"seed {SEED}"
    # And consecutive runs read consecutive ranges of the binlog, the first from its snapshot's
    assert first["snapshot"] and not any(r["snapshot"] for r in later)
    assert_consecutive(reports)
    print(f"{server}, seed {SEED}: {writer.transactions} transactions, {changes(later)} changes in "
          f"{len(reports)} runs")
