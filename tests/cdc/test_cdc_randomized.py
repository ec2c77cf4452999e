"""CDC under writers: a seeded writer inserts, updates (the same row several times in one
transaction), deletes, keeps a long transaction open across runs and truncates the table, while
cdc runs go on; after the last run the destination equals the source, by key, every column.

ETL_CDC_SEED replays another draw of the writer's operations (the interleaving with the runs is
the machine's); the size is WRITER_TRANSACTIONS transactions over RUNS runs."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery

from tests.cdc.conftest import CdcSource
from tests.cdc.random_writer import (
    RandomWriter,
    assert_consecutive,
    changes,
    random_run_once,
    runs_while_writing,
)
from tests.cdc.test_cdc_postgres import RANDOM_TEXT, completed, dest, source_rows
from tests.e2e.oneshot import RunOnce

__all__ = ["random_run_once"]
SEED = int(os.environ.get("ETL_CDC_SEED", "20261202"))


class Writer(RandomWriter):
    """PostgreSQL's: its special change rewrites a body with a value large enough to be TOASTed."""

    SPECIAL = "toast"
    NOW = "now()"
    LONG_ROWS = "SELECT g, 'long', 0 FROM generate_series({start}, {stop}) g"
    INSERT_VALUES = "CAST(:doc AS jsonb), :body, :tags, now()"
    CHOICES = (("body", [None, "short"]), ("tags", [None, ["a"], ["b", "c"]]))

    def special(self, conn: sa.Connection, key: int) -> None:
        self._write(conn, f"UPDATE {self.table} SET body = {RANDOM_TEXT} WHERE id = :id", id=key)


def test_cdc_runs_during_random_writes_end_with_the_source_exactly(
    cdc_source: CdcSource, random_run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    def run(name: str) -> dict[str, Any]:
        report = completed(random_run_once(cdc_source.request(), name)).cdc
        assert report is not None
        return report

    # Given a table of 100 rows, loaded by the first cdc run
    cdc_source.execute("INSERT INTO {schema}.items SELECT g, 'n' || g, g, g, jsonb_build_object('g', g), "
                       "NULL, NULL, now() FROM generate_series(1, 100) g")
    completed(random_run_once(cdc_source.request(), "random-0"))
    # When a writer changes it at random while cdc runs follow one another
    writer = Writer(sa.create_engine(cdc_source.server.url), f'"{cdc_source.schema}".items', SEED)
    writer.start()
    reports = runs_while_writing(writer, run, join_s=120)
    # Then the destination equals the source, by key, every column
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source), f"seed {SEED}"
    # And consecutive runs read consecutive ranges of the change log
    assert_consecutive(reports)
    print(f"seed {SEED}: {writer.transactions} transactions, {changes(reports)} changes in "
          f"{len(reports)} runs")
