"""`load_type: cdc` on PostgreSQL end to end: the first run loads the slot's exported snapshot,
later runs apply inserts, updates, deletes and truncates, the destination equals the source."""

from __future__ import annotations

from typing import Any

from google.cloud import bigquery

from tests.cdc.conftest import CdcSource
from tests.e2e.oneshot import RunOnce
from tests.e2e.sources import normalise
from tests.e2e.stack import bq_rows
from worker.messages import RunCompleted


def dest(bq_client: bigquery.Client, dataset: str) -> list[tuple[Any, ...]]:
    return [normalise(row) for row in bq_rows(bq_client, dataset, "items", "id")]


def source_rows(source: CdcSource) -> list[tuple[Any, ...]]:
    """As BigQuery holds them: a NULL array (`tags`, column 6) is an empty REPEATED column."""
    return [normalise(tuple([] if i == 6 and v is None else v for i, v in enumerate(row)))
            for row in source.rows()]


def completed(events: list[Any]) -> RunCompleted:
    last = events[-1]
    assert isinstance(last, RunCompleted), last
    return last


def test_cdc_loads_the_snapshot_then_applies_every_kind_of_change(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a table with rows
    cdc_source.execute("INSERT INTO {schema}.items SELECT g, 'n' || g, g, g * 1.5, "
                       "jsonb_build_object('g', g), repeat('x', 10), ARRAY['a', 'b'], now() "
                       "FROM generate_series(1, 30) g")
    # When the first cdc run loads it
    first = completed(run_once(cdc_source.request(), "cdc-1"))
    assert first.cdc is not None and first.cdc["snapshot"] is True
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)
    # And rows are inserted, updated (twice in one transaction), deleted
    cdc_source.execute("INSERT INTO {schema}.items (id, name) VALUES (100, 'new')",
                       "UPDATE {schema}.items SET qty = 1000 WHERE id = 5",
                       "UPDATE {schema}.items SET qty = qty + 1, name = 'twice' WHERE id = 5",
                       "DELETE FROM {schema}.items WHERE id IN (7, 8)")
    second = completed(run_once(cdc_source.request(), "cdc-2"))
    # Then the second run applies exactly those changes
    assert second.cdc is not None and second.cdc["snapshot"] is False
    assert (second.cdc["inserts"], second.cdc["updates"], second.cdc["deletes"]) == (1, 2, 2)
    assert second.cdc["start"] == first.cdc["end"]
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)
    # And a TRUNCATE followed by inserts leaves only the new rows
    cdc_source.execute("TRUNCATE {schema}.items", "INSERT INTO {schema}.items (id, name) VALUES (1, 'after')")
    third = completed(run_once(cdc_source.request(), "cdc-3"))
    assert third.cdc is not None and third.cdc["truncates"] == 1
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)
