"""BigQuerySink against bqemulator: tables, loads, the commit transaction and the ledger."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from tests.conftest import PROJECT
from worker import errors
from worker.columns import Column, arrow_schema
from worker.constants import CATALOG, LEDGER_TABLE, STAGING_PREFIX, TRANSACTIONAL
from worker.ledger import LedgerEntry
from worker.retry import RetryPolicy
from worker.sinks.bigquery import BigQuerySink, BigQueryStaging
from worker.sinks.bigquery_sql import LEDGER_FIELDS
from worker.spool import PartWriter

ID = Column("id", "integer", pa.int64(), "INT64")
NAME = Column("name", "text", pa.string(), "STRING")
DOC = Column("doc", "jsonb", pa.string(), "JSON")
TAGS = Column("tags", "text[]", pa.list_(pa.string()), "STRING", repeated=True)
NUMS = Column("nums", "int[]", pa.list_(pa.int64()), "INT64", repeated=True)

Rows = Sequence[dict[str, Any]]


@pytest.fixture
def sink(bq_client: bigquery.Client, bq_dataset: str) -> BigQuerySink:
    return BigQuerySink(
        bq_client, project=PROJECT, dataset=bq_dataset, retry=RetryPolicy(max_tries=1, first_delay_s=0),
        staging_expiration_s=3600, emulator=True,
    )


@pytest.fixture
def query(bq_client: bigquery.Client, bq_dataset: str) -> Callable[[str], list[dict[str, Any]]]:
    """Run SQL with `{ds}` standing for the test's dataset; rows as dicts."""

    def run(text: str) -> list[dict[str, Any]]:
        job = bq_client.query(text.format(ds=f"`{PROJECT}`.`{bq_dataset}`"), job_retry=None)
        return [dict(row) for row in job.result()]

    return run


def stage(
    sink: BigQuerySink, tmp_path: Path, columns: tuple[Column, ...], rows: Rows, *,
    run_id: str, load_type: str = CATALOG, attempt: int = 1, part_rows: int = 2,
) -> BigQueryStaging:
    """Open staging and load `rows` through the spool in parts of `part_rows`."""
    staging = sink.open_staging("orders", columns, run_id, attempt, load_type)
    with PartWriter(columns, part_rows=part_rows, spool_dir=tmp_path) as writer:
        batch = pa.RecordBatch.from_pylist(list(rows), schema=arrow_schema(columns))
        for path in [*writer.write(batch), *writer.finish()]:
            staging.load_part(path)
            path.unlink()
    return staging


def entry_for(staging: BigQueryStaging, rows_extracted: int, **changes: Any) -> LedgerEntry:
    entry = LedgerEntry(
        run_id=staging.run_id, data_source_id=11, etl_run_id=None, dest_table=staging.dest_table,
        load_type=staging.load_type, window_column=None, window_low=None, window_high=None,
        rows_extracted=rows_extracted, rows_loaded=staging.rows_loaded, batches_loaded=staging.parts_loaded,
        source_row_count=rows_extracted, attempt=staging.attempt, completed_seq=3,
        staging_token=staging.token, started_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        committed_at=datetime.now(UTC), duration_seconds=1.25,
    )
    entry = dataclasses.replace(entry, **changes)
    if entry.window_high_key is None and staging.load_type == TRANSACTIONAL:
        # The commit guard compares sortable keys: give each run its own day unless told.
        day = next(_DAYS)
        low, high = entry.window_low or f"2000-01-{day:02d}", entry.window_high or f"2000-01-{day + 1:02d}"
        entry = dataclasses.replace(entry, window_low_key=low, window_high_key=high)
    return entry


_DAYS = itertools.count(1)


def commit_rows(
    sink: BigQuerySink, tmp_path: Path, columns: tuple[Column, ...], rows: Rows, run_id: str,
    load_type: str = CATALOG, **changes: Any,
) -> LedgerEntry:
    staging = stage(sink, tmp_path, columns, rows, run_id=run_id, load_type=load_type)
    try:
        return staging.commit(entry_for(staging, len(rows), **changes))
    finally:
        staging.drop()


def ids(query: Callable[[str], list[dict[str, Any]]]) -> list[int]:
    return [row["id"] for row in query("SELECT id FROM {ds}.orders ORDER BY id")]


def test_open_staging_creates_dataset_ledger_destination_and_expiring_staging(
    sink: BigQuerySink, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    staging = sink.open_staging("orders", (ID, DOC, TAGS), "run-a", 3, CATALOG)

    ledger = bq_client.get_table(f"{PROJECT}.{bq_dataset}.{LEDGER_TABLE}")
    dest = bq_client.get_table(f"{PROJECT}.{bq_dataset}.orders")
    stage_table = bq_client.get_table(f"{PROJECT}.{bq_dataset}.{staging.table_name}")
    assert [f.name for f in ledger.schema] == [name for name, _ in LEDGER_FIELDS]
    assert [(f.name, f.field_type, f.mode) for f in dest.schema] == [
        ("id", "INT64", "NULLABLE"), ("doc", "JSON", "NULLABLE"), ("tags", "STRING", "REPEATED"),
    ]
    assert [(f.name, f.field_type) for f in stage_table.schema] == [
        ("id", "INT64"), ("doc", "STRING"), ("tags", "STRING"),  # JSON staged as STRING
    ]
    assert staging.table_name == f"{STAGING_PREFIX}run_a_a3_{staging.token}"
    assert len(staging.token) == 8


def test_catalog_commit_replaces_the_rows(sink: BigQuerySink, tmp_path: Path, query: Any) -> None:
    first = commit_rows(sink, tmp_path, (ID, NAME), [{"id": i, "name": f"n{i}"} for i in range(5)], "run-1")
    replacement: Rows = [{"id": 10, "name": "x"}, {"id": 11, "name": None}]
    second = commit_rows(sink, tmp_path, (ID, NAME), replacement, "run-2")

    assert query("SELECT id, name FROM {ds}.orders ORDER BY id") == replacement
    assert (first.run_id, second.run_id) == ("run-1", "run-2")
    assert query("SELECT run_id FROM {ds}._etl_ledger ORDER BY run_id") == [{"run_id": "run-1"},
                                                                            {"run_id": "run-2"}]


def test_transactional_commit_appends(sink: BigQuerySink, tmp_path: Path, query: Any) -> None:
    commit_rows(sink, tmp_path, (ID,), [{"id": 1}, {"id": 2}], "run-1", TRANSACTIONAL)
    commit_rows(sink, tmp_path, (ID,), [{"id": 3}], "run-2", TRANSACTIONAL)
    assert ids(query) == [1, 2, 3]


def test_commit_records_the_entry_it_applied(sink: BigQuerySink, tmp_path: Path) -> None:
    staging = stage(sink, tmp_path, (ID,), [{"id": 1}, {"id": 2}, {"id": 3}], run_id="run-1")
    entry = entry_for(staging, 3, etl_run_id=99, window_high=None)

    before = datetime.now(UTC)
    applied = staging.commit(entry)
    after = datetime.now(UTC)

    # Every field round-trips through the ledger, but the commit time and the duration up to it,
    # which come from BigQuery's clock as the transaction runs
    clocked = ("committed_at", "duration_seconds")
    assert applied == dataclasses.replace(entry, **{name: getattr(applied, name) for name in clocked})
    assert before - timedelta(seconds=1) <= applied.committed_at <= after + timedelta(seconds=1)
    expected_s = (applied.committed_at - entry.started_at).total_seconds()
    assert applied.duration_seconds == pytest.approx(expected_s, abs=1e-3)
    assert sink.find_commit("run-1") == applied
    assert sink.find_commit("never-ran") is None
    assert (staging.parts_loaded, staging.rows_loaded) == (2, 3)


def test_the_same_run_committed_twice_is_applied_once(sink: BigQuerySink, tmp_path: Path, query: Any) -> None:
    # Given delivery 1 of run-1 committed
    first = commit_rows(sink, tmp_path, (ID,), [{"id": 1}, {"id": 2}], "run-1", TRANSACTIONAL)
    # When delivery 2 of the same run stages (other rows, another token) and commits
    again = stage(sink, tmp_path, (ID,), [{"id": 7}], run_id="run-1", load_type=TRANSACTIONAL, attempt=2)
    in_force = again.commit(entry_for(again, 1, attempt=2))
    again.drop()
    # Then the destination and the ledger are unchanged and the first delivery's entry is returned
    assert again.token != first.staging_token
    assert in_force == first
    assert ids(query) == [1, 2]
    assert query("SELECT COUNT(*) AS n FROM {ds}._etl_ledger") == [{"n": 1}]


def test_a_failing_statement_rolls_the_whole_transaction_back(
    sink: BigQuerySink, tmp_path: Path, query: Any
) -> None:
    commit_rows(sink, tmp_path, (ID, DOC), [{"id": 1, "doc": "{}"}], "run-1")
    # Given staged rows whose JSON text cannot be parsed: PARSE_JSON fails after the DELETE ran
    staging = stage(sink, tmp_path, (ID, DOC), [{"id": 2, "doc": "{not json"}], run_id="run-2")
    with pytest.raises(errors.DataRejectedError):
        staging.commit(entry_for(staging, 1))
    # Then neither the DELETE nor the ledger row survived
    assert ids(query) == [1]
    assert sink.find_commit("run-2") is None


def test_a_count_mismatch_commits_nothing(sink: BigQuerySink, tmp_path: Path, query: Any) -> None:
    commit_rows(sink, tmp_path, (ID,), [{"id": 1}], "run-1")
    staging = stage(sink, tmp_path, (ID,), [{"id": 2}, {"id": 3}], run_id="run-2")

    with pytest.raises(errors.VerificationError, match="staging holds 2 rows, 5 were extracted"):
        staging.commit(entry_for(staging, 5))

    assert ids(query) == [1]
    assert sink.find_commit("run-2") is None


def test_a_new_source_column_is_added_and_earlier_rows_read_null(
    sink: BigQuerySink, tmp_path: Path, query: Any, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    commit_rows(sink, tmp_path, (ID,), [{"id": 1}], "run-1", TRANSACTIONAL)
    wider = (ID, NAME, NUMS)
    commit_rows(sink, tmp_path, wider, [{"id": 2, "name": "b", "nums": [1]}], "run-2", TRANSACTIONAL)

    rows = query("SELECT id, name, nums FROM {ds}.orders ORDER BY id")
    assert rows == [{"id": 1, "name": None, "nums": []}, {"id": 2, "name": "b", "nums": [1]}]
    dest = bq_client.get_table(f"{PROJECT}.{bq_dataset}.orders")
    assert [(f.name, f.mode) for f in dest.schema] == [
        ("id", "NULLABLE"), ("name", "NULLABLE"), ("nums", "REPEATED"),
    ]
    # And a third run with the same columns needs no change
    commit_rows(sink, tmp_path, wider, [{"id": 3, "name": "c", "nums": None}], "run-3", TRANSACTIONAL)
    assert ids(query) == [1, 2, 3]


def test_an_incompatible_type_change_is_refused(sink: BigQuerySink, tmp_path: Path) -> None:
    commit_rows(sink, tmp_path, (ID,), [{"id": 1}], "run-1")
    as_text = Column("id", "text", pa.string(), "STRING")
    expected = "'id': destination has INT64, source now gives STRING"
    with pytest.raises(errors.SchemaMismatchError, match=expected):
        sink.open_staging("orders", (as_text,), "run-2", 1, CATALOG)


def test_json_is_staged_as_string_and_committed_as_json(
    sink: BigQuerySink, tmp_path: Path, query: Any
) -> None:
    doc = {"a": [1, 2], "b": {"c": "ü"}}
    rows_in: Rows = [{"id": 1, "doc": json.dumps(doc)}, {"id": 2, "doc": None}, {"id": 3, "doc": "null"}]
    commit_rows(sink, tmp_path, (ID, DOC), rows_in, "run-1")

    rows = query(
        "SELECT id, JSON_VALUE(doc, '$.b.c') AS c, TO_JSON_STRING(doc) AS text, doc IS NULL AS sql_null,"
        " JSON_TYPE(doc) AS kind FROM {ds}.orders ORDER BY id"
    )
    assert rows[0]["c"] == "ü"
    assert json.loads(rows[0]["text"]) == doc
    # SQL NULL stays SQL NULL; the JSON value null stays a JSON value (docs/types.md): told apart
    # by IS NULL and JSON_TYPE, not by TO_JSON_STRING's text
    assert [(row["id"], row["sql_null"], row["kind"]) for row in rows] == [
        (1, False, "object"), (2, True, None), (3, False, "null")]
    assert rows[2]["text"] == "null"


def test_an_existing_ddl_table_is_accepted_with_json_and_a_wider_numeric(
    sink: BigQuerySink, tmp_path: Path, query: Any
) -> None:
    # Given a destination made by SQL DDL (the emulator then reports its JSON column as STRING)
    sink.ensure_ledger()
    query("CREATE TABLE {ds}.orders (id NUMERIC, doc JSON)")
    # When INT64 ids and JSON documents arrive, they are cast and parsed into it
    commit_rows(sink, tmp_path, (ID, DOC), [{"id": 5, "doc": '{"k": 1}'}], "run-1")
    assert query("SELECT id, JSON_VALUE(doc, '$.k') AS k FROM {ds}.orders") == [{"id": Decimal(5), "k": "1"}]


def test_arrays_and_scalar_types_round_trip(sink: BigQuerySink, tmp_path: Path, query: Any) -> None:
    columns = (
        ID, TAGS, NUMS,
        Column("amount", "numeric", pa.decimal128(38, 9), "NUMERIC"),
        Column("ratio", "float8", pa.float64(), "FLOAT64"),
        Column("ok", "bool", pa.bool_(), "BOOL"),
        Column("raw", "bytea", pa.binary(), "BYTES"),
        Column("day", "date", pa.date32(), "DATE"),
        Column("local", "timestamp", pa.timestamp("us"), "DATETIME"),
        Column("at", "timestamptz", pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
        Column("clock", "time", pa.time64("us"), "TIME"),
    )
    row = {
        "id": 1, "tags": ["a", "b"], "nums": [3, 1, 2], "amount": Decimal("12.345000000"), "ratio": 0.5,
        "ok": True, "raw": b"\x00\xff", "day": date(2024, 2, 29), "local": datetime(2024, 1, 2, 3, 4, 5, 6),
        "at": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "clock": time(23, 59, 59, 999999),
    }
    empty = {"id": 2, "tags": [], "nums": None} | {col.name: None for col in columns[3:]}
    commit_rows(sink, tmp_path, columns, [row, empty], "run-1")

    got = query("SELECT * FROM {ds}.orders ORDER BY id")
    assert got[0] == row
    assert got[1] == empty | {"nums": []}  # BigQuery stores a NULL array as []


def test_drop_is_idempotent(sink: BigQuerySink, bq_client: bigquery.Client, bq_dataset: str) -> None:
    staging = sink.open_staging("orders", (ID,), "run-1", 1, CATALOG)
    staging.drop()
    staging.drop()
    with pytest.raises(gexc.NotFound):
        bq_client.get_table(f"{PROJECT}.{bq_dataset}.{staging.table_name}")


def test_last_window_high_is_the_latest_committed_transactional_high(
    sink: BigQuerySink, tmp_path: Path
) -> None:
    assert sink.last_window_high(11, "orders") is None
    window = {"window_column": "updated_at"}
    commit_rows(sink, tmp_path, (ID,), [{"id": 1}], "run-1", TRANSACTIONAL, **window,
                window_high="2024-01-01T00:00:00.000000", committed_at=datetime(2024, 1, 1, 1, tzinfo=UTC))
    commit_rows(sink, tmp_path, (ID,), [{"id": 2}], "run-2", TRANSACTIONAL, **window,
                window_low="2024-01-01T00:00:00.000000", window_high="2024-01-02T00:00:00.000000",
                committed_at=datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert sink.last_window_high(11, "orders") == "2024-01-02T00:00:00.000000"
    assert sink.last_window_high(12, "orders") is None
    assert sink.last_window_high(11, "other") is None


def test_an_overlapping_window_is_refused_inside_the_transaction(
    sink: BigQuerySink, tmp_path: Path, query: Any
) -> None:
    # Given a committed window [Jan 1, Jan 3) of this source and table
    rows: Rows = [{"id": 1, "name": "a"}]
    commit_rows(sink, tmp_path, (ID, NAME), rows, "run-1", TRANSACTIONAL,
                window_low_key="2024-01-01", window_high_key="2024-01-03")
    # When a concurrent run planned [Jan 2, Jan 4) from an older ledger and commits second
    with pytest.raises(errors.SupersededError, match="overlapping window"):
        commit_rows(sink, tmp_path, (ID, NAME), [{"id": 2, "name": "b"}], "run-2", TRANSACTIONAL,
                    window_low_key="2024-01-02", window_high_key="2024-01-04")
    # Then nothing of it was applied; the touching window [Jan 3, Jan 4) is accepted
    assert ids(query) == [1]
    commit_rows(sink, tmp_path, (ID, NAME), [{"id": 3, "name": "c"}], "run-3", TRANSACTIONAL,
                window_low_key="2024-01-03", window_high_key="2024-01-04")
    assert ids(query) == [1, 3]
    assert query("SELECT version FROM {ds}._etl_heads") == [{"version": 2}]


def test_an_older_catalog_snapshot_never_overwrites_a_newer_one(
    sink: BigQuerySink, tmp_path: Path, query: Any
) -> None:
    newer = datetime(2024, 6, 1, 12, 0, 1, tzinfo=UTC)
    commit_rows(sink, tmp_path, (ID, NAME), [{"id": 2, "name": "new"}], "run-new", snapshot_at=newer)
    with pytest.raises(errors.SupersededError, match="newer snapshot"):
        commit_rows(sink, tmp_path, (ID, NAME), [{"id": 1, "name": "old"}], "run-old",
                    snapshot_at=datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC))
    assert ids(query) == [2]


def test_a_ledger_from_an_older_version_gets_the_new_columns(
    sink: BigQuerySink, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a ledger created before the window keys and value counts existed
    bq_client.create_dataset(f"{PROJECT}.{bq_dataset}", exists_ok=True)
    old = [bigquery.SchemaField(name, kind) for name, kind in LEDGER_FIELDS[:8]]
    bq_client.create_table(bigquery.Table(f"{PROJECT}.{bq_dataset}.{LEDGER_TABLE}", schema=old))
    # When the sink starts
    sink.ensure_ledger()
    # Then every current column is there, of its type, the old ones first as they were
    ledger = bq_client.get_table(f"{PROJECT}.{bq_dataset}.{LEDGER_TABLE}")
    legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
    assert [(f.name, legacy.get(f.field_type, f.field_type)) for f in ledger.schema] == list(LEDGER_FIELDS)
