"""The seeded random writer of the randomized CDC suites (PostgreSQL's slot, MariaDB/MySQL's binlog),
and the run loop they share: cdc runs follow one another while the writer goes on.

The writer inserts, updates (the same row several times in one transaction), deletes and makes one
dialect-specific change (`special`), keeps a long transaction open across runs and truncates the
table. A dialect gives its SQL as data (`NOW`, `LONG_ROWS`, `INSERT_VALUES`, `CHOICES`) and its
special change as a method. The random draws, in their order, are the same whatever the dialect:
a seed replays the same operations (only the interleaving with the runs is the machine's).

The runs (`random_run_once`) keep run_once's tiny batches, which the change buffers' flushes are
made of, and stage in parts of RANDOM_PART_ROWS rows instead of 11."""

from __future__ import annotations

import json
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from devstack.emulators import Emulator
from tests.e2e.oneshot import BATCH_ROWS, RunOnce, one_shot_runner
from tests.e2e.stack import make_settings

WRITER_TRANSACTIONS = 1000
RUNS = 8
LONG_IDS = range(1_000_000, 1_000_020)  # the long transaction's own rows: no lock waits on others
FIRST_ROWS = 100  # the table's rows before the writer starts: ids 1..100
# Rows per staged part: a run of these suites applies hundreds of changes, which parts of 11 rows
# made 40-60 load jobs per run (each a Parquet file, an upload and a job on the emulator: two
# thirds of the suites' CPU, measured). A part's boundary is nothing the change log's order or the
# merge by key can see (every part of a run lands in one staging table before the one MERGE), and
# runs still stage several parts; the other cdc tests keep run_once's 7 and 11 rows, which their
# 30-row tables cross (tests/cdc/test_cdc_postgres.py, test_cdc_mariadb.py).
RANDOM_PART_ROWS = 200


@pytest.fixture
def random_run_once(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> RunOnce:
    """run_once, staging in parts of RANDOM_PART_ROWS rows (batches stay BATCH_ROWS)."""
    return one_shot_runner(make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                                         ETL_BATCH_SIZE=BATCH_ROWS, ETL_PART_ROWS=RANDOM_PART_ROWS))


class RandomWriter(threading.Thread, ABC):
    """A daemon thread writing WRITER_TRANSACTIONS random transactions into `table`; a failure is
    kept in `error` for the test to report (a thread's exception would otherwise be lost)."""

    SPECIAL: ClassVar[str]  # the dialect's own kind of change, drawn as often as a delete
    NOW: ClassVar[str]  # the SQL of the current time, for updated_at
    LONG_ROWS: ClassVar[str]  # a SELECT of (id, 'long', 0) for LONG_IDS, from {start} to {stop}
    INSERT_VALUES: ClassVar[str]  # after the price: the doc, the choices' columns and the time
    CHOICES: ClassVar[tuple[tuple[str, Sequence[Any]], ...]]  # per column, drawn in this order

    def __init__(self, engine: sa.Engine, table: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.table = table
        self.rng = random.Random(seed)
        self.live: set[int] = set(range(1, FIRST_ROWS + 1))
        self.next_id = FIRST_ROWS + 1
        self.transactions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._transactions()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.engine.dispose()

    def _transactions(self) -> None:
        long_conn = self.engine.connect()
        long_tx = long_conn.begin()
        self._write(long_conn, f"INSERT INTO {self.table} (id, name, qty) "
                    + self.LONG_ROWS.format(start=LONG_IDS.start, stop=LONG_IDS.stop - 1))
        truncate_at = WRITER_TRANSACTIONS * 2 // 3
        for number in range(WRITER_TRANSACTIONS):
            if number == WRITER_TRANSACTIONS // 2:  # the long transaction commits late
                self._write(long_conn, f"UPDATE {self.table} SET qty = qty + 1 WHERE id >= {LONG_IDS.start}")
                long_tx.commit()
                long_conn.close()
            if number == truncate_at:
                with self.engine.begin() as conn:
                    self._write(conn, f"TRUNCATE {self.table}")
                self.live = set()
                continue
            with self.engine.begin() as conn:
                for _ in range(self.rng.randint(1, 6)):
                    self._one_change(conn)
            self.transactions += 1
            time.sleep(self.rng.random() * 0.01)

    def _write(self, conn: sa.Connection, statement: str, **params: Any) -> None:
        conn.execute(sa.text(statement), params)

    def _one_change(self, conn: sa.Connection) -> None:
        kinds = ["insert", "update", "update_twice", "delete", self.SPECIAL]
        kind = self.rng.choices(kinds, [4, 4, 2, 1, 1])[0]
        if kind == "insert" or not self.live:
            self._insert(conn)
            return
        key = self.rng.choice(sorted(self.live))
        if kind == "delete":
            self._write(conn, f"DELETE FROM {self.table} WHERE id = :id", id=key)
            self.live.discard(key)
        elif kind == self.SPECIAL:
            self.special(conn, key)
        else:
            for _ in range(2 if kind == "update_twice" else 1):
                self._write(conn, f"UPDATE {self.table} SET qty = qty + 1, name = :name, "
                            f"updated_at = {self.NOW} WHERE id = :id", id=key,
                            name=f"u{self.rng.randint(0, 999)}")

    def _insert(self, conn: sa.Connection) -> None:
        row: dict[str, Any] = {"id": self.next_id, "name": f"n{self.next_id}", "qty": self.rng.randint(0, 99),
                               "price": self.rng.randint(0, 10**6) / 100,
                               "doc": json.dumps({"k": self.rng.randint(0, 9)})}
        row |= {column: self.rng.choice(values) for column, values in self.CHOICES}  # dict order: draw order
        self._write(conn, f"INSERT INTO {self.table} VALUES (:id, :name, :qty, :price, {self.INSERT_VALUES})",
                    **row)
        self.live.add(self.next_id)
        self.next_id += 1

    @abstractmethod
    def special(self, conn: sa.Connection, key: int) -> None:
        """The dialect's own change to the live row `key`."""


def runs_while_writing(writer: RandomWriter, run: Callable[[str], dict[str, Any]],
                       join_s: float) -> list[dict[str, Any]]:
    """Cdc runs (`run(name)` → its cdc report) while `writer` goes on, up to RUNS of them, then
    one more once it is done: the reports, in order."""
    reports = []
    for number in range(1, RUNS + 1):
        reports.append(run(f"random-{number}"))
        if not writer.is_alive():
            break
        time.sleep(0.5)
    writer.join(timeout=join_s)
    assert not writer.is_alive() and writer.error is None, writer.error
    reports.append(run("random-last"))
    return reports


def assert_consecutive(reports: list[dict[str, Any]]) -> None:
    """Consecutive runs read consecutive ranges of the change log, and saw the one truncate."""
    assert [r["start"] for r in reports[1:]] == [r["end"] for r in reports[:-1]]
    assert sum(r["truncates"] for r in reports) == 1


def changes(reports: list[dict[str, Any]]) -> int:
    return sum(r["inserts"] + r["updates"] + r["deletes"] for r in reports)
