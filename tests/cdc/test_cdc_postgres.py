"""`load_type: cdc` on PostgreSQL end to end: the first run loads the slot's exported snapshot,
later runs apply inserts, updates, deletes and truncates, the destination equals the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import Emulator
from tests import forkserver
from tests.cdc.conftest import CdcSource
from tests.e2e.oneshot import RunOnce
from tests.e2e.sources import normalise
from tests.e2e.stack import bq_rows, make_settings
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.messages import RunCompleted, RunFailed
from worker.sources.pg_cdc import CdcTable
from worker.table_run import TableRun


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


def cdc_check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`etl-worker cdc-check --request PATH`, its output captured."""
    return forkserver.run([sys.executable, "-m", "worker", "cdc-check", "--request", str(path)], env=env,
                          timeout=60)


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


RANDOM_TEXT = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))"  # ~9 kB: TOASTed


def test_unchanged_toasted_values_keep_their_latest_value(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given rows whose body is stored out of line (TOAST)
    cdc_source.execute(f"INSERT INTO {{schema}}.items (id, name, body) SELECT g, 'n', {RANDOM_TEXT} "
                       "FROM generate_series(1, 3) g")
    completed(run_once(cdc_source.request(), "toast-1"))
    # When updates leave body alone (pgoutput does not resend it), and row 2's body changes and is
    # then left alone by a later update in the same run
    cdc_source.execute("UPDATE {schema}.items SET name = 'renamed' WHERE id = 1",
                       f"UPDATE {{schema}}.items SET body = {RANDOM_TEXT} WHERE id = 2",
                       "UPDATE {schema}.items SET name = 'after body' WHERE id = 2")
    second = completed(run_once(cdc_source.request(), "toast-2"))
    # Then each row has its newest body: the destination's where unsent, the run's newest otherwise
    assert second.cdc is not None and second.cdc["kept_columns"] == ["body"]
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)


def test_a_column_added_at_the_source_is_added_in_bigquery(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id, name) VALUES (1, 'a'), (2, 'b')")
    completed(run_once(cdc_source.request(), "evolve-1"))
    cdc_source.execute("UPDATE {schema}.items SET name = 'before' WHERE id = 1",
                       "ALTER TABLE {schema}.items ADD COLUMN extra integer",
                       "INSERT INTO {schema}.items (id, name, extra) VALUES (3, 'c', 33)",
                       "UPDATE {schema}.items SET extra = 22 WHERE id = 2")
    completed(run_once(cdc_source.request(), "evolve-2"))
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)


def test_a_primary_key_that_changes_type_is_a_permanent_typed_error(
    cdc_source: CdcSource, run_once: RunOnce
) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id, name) VALUES (1, 'a')")
    completed(run_once(cdc_source.request(), "rekey-1"))
    cdc_source.execute("INSERT INTO {schema}.items (id, name) VALUES (2, 'b')",
                       "ALTER TABLE {schema}.items ALTER COLUMN id TYPE text")
    failed = run_once(cdc_source.request(), "rekey-2")[-1]
    assert isinstance(failed, RunFailed) and not failed.error.retryable
    # (BigQuery's INT64 key cannot take text: refused before anything is staged; a key whose new
    # type BigQuery could take is refused by the change log's relation: tests/unit/test_pgoutput.py)
    assert failed.error.type == "SchemaMismatchError" and "'id'" in failed.error.message


def test_changes_redelivered_after_a_commit_whose_slot_was_not_advanced_apply_once(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id, qty) SELECT g, 0 FROM generate_series(1, 5) g")
    completed(run_once(cdc_source.request(), "redeliver-1"))
    # Given a run that commits in BigQuery but dies before advancing the slot
    cdc_source.execute("UPDATE {schema}.items SET qty = qty + 1", "DELETE FROM {schema}.items WHERE id = 5")
    with monkeypatch.context() as patched:
        patched.setattr(CdcTable, "confirm", lambda self, position: None)
        completed(run_once(cdc_source.request(), "redeliver-2"))
    # When more changes come and the next run reads the slot from its old position
    cdc_source.execute("UPDATE {schema}.items SET qty = qty + 10 WHERE id = 1",
                       "INSERT INTO {schema}.items (id, qty) VALUES (5, 50)")
    third = completed(run_once(cdc_source.request(), "redeliver-3"))
    # Then it finds the slot advanced to the ledger's position first: nothing is applied twice
    assert third.cdc is not None and (third.cdc["updates"], third.cdc["inserts"]) == (1, 1)
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)


def test_cdc_on_a_server_without_logical_decoding_fails_permanently_naming_the_setting(
    pg_schema: str, pg_admin: sa.Engine, run_once: RunOnce, tmp_path: Path
) -> None:
    # Given the machine's PostgreSQL (wal_level=replica) and a table
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{pg_schema}".items (id bigint PRIMARY KEY, name text)'))
    request = {"data_source_id": 5, "source_type": "postgresql", "schema_name": pg_schema,
               "connection_params": {"host": "127.0.0.1", "port": 5432, "database": "test",
                                     "username": "postgres"},
               "source_table_name": "items", "dest_table_name": "items", "load_type": "cdc"}
    # When a cdc run starts, then it fails for good, saying what to change
    failed = run_once(request, "no-logical", expect=Outcome.ACK)[-1]
    assert isinstance(failed, RunFailed) and not failed.error.retryable
    assert failed.error.type == "CdcSetupError"
    assert "wal_level is replica, CDC needs logical" in failed.error.message
    # And cdc-check says the same without running anything
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    env = {**os.environ, "GCP_PROJECT_ID": "etl-test", "BIGQUERY_DATASET": "unused"}
    checked = cdc_check(path, env)
    assert checked.returncode == 1, checked.stderr
    assert "problem: wal_level is replica, CDC needs logical" in checked.stdout
    assert "cloudsql.logical_decoding" in checked.stdout


def test_cdc_check_says_ready_on_a_logical_server(cdc_source: CdcSource, tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(cdc_source.request()))
    env = {**os.environ, "GCP_PROJECT_ID": "etl-test", "BIGQUERY_DATASET": "unused"}
    checked = cdc_check(path, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ready: a cdc run can start" in checked.stdout and "not created yet" in checked.stdout


def test_a_slot_retaining_more_wal_than_the_threshold_is_warned_about(
    cdc_source: CdcSource, pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str
) -> None:
    settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                             ETL_CDC_WAL_WARNING_BYTES=0)
    handler = build_handler(settings, bus := MemoryEventBus(), Redelivery(redelivers=False))
    for run_id in ("wal-1", "wal-2"):  # the second finds the slot, holding some WAL
        cdc_source.execute("INSERT INTO {schema}.items (id) SELECT coalesce(max(id), 0) + 1 "
                           "FROM {schema}.items")
        delivery = Delivery(data=json.dumps(cdc_source.request()).encode(), message_id=run_id,
                            attributes={"run_id": run_id})
        assert handler.handle(delivery, threading.Event()) is Outcome.ACK
    second = completed(bus.events)
    assert second.cdc is not None and second.cdc["retained_wal_bytes"] > 0
    assert any("retains" in warning and "ETL_CDC_WAL_WARNING_BYTES=0" in warning
               for warning in second.warnings)


def test_two_runs_from_one_position_never_both_apply_it(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id, qty) SELECT g, 0 FROM generate_series(1, 5) g")
    completed(run_once(cdc_source.request(), "race-0"))
    cdc_source.execute("UPDATE {schema}.items SET qty = qty + 1")
    # Given run B planned from the ledger's position, and run A, planned from the same one, which
    # commits while B stages
    stage, raced = TableRun.stage, list[RunCompleted]()

    def stage_after_a_rival(self: TableRun, sink: Any) -> None:
        if self.attempt.run_id == "race-b" and not raced:
            raced.append(completed(run_once(cdc_source.request(), "race-a")))
            cdc_source.execute("UPDATE {schema}.items SET qty = qty + 10 WHERE id = 1")
        stage(self, sink)

    monkeypatch.setattr(TableRun, "stage", stage_after_a_rival)
    b = completed(run_once(cdc_source.request(), "race-b"))
    # Then B met A's committed range in its commit, planned again from A's end, and applied the rest
    a = raced[0]
    assert a.cdc is not None and b.cdc is not None and b.cdc["start"] == a.cdc["end"]
    assert (a.cdc["updates"], b.cdc["updates"]) == (5, 1)
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)


def test_a_user_without_replication_and_a_table_without_identity_are_told_what_to_change(
    cdc_source: CdcSource, run_once: RunOnce, tmp_path: Path
) -> None:
    # Given a user who may read the tables but has no REPLICATION and owns none of them, and a
    # table without a primary key
    role = f"etl_{cdc_source.schema}"
    cdc_source.execute(f'CREATE ROLE "{role}" LOGIN', f'GRANT USAGE ON SCHEMA {{schema}} TO "{role}"',
                       "CREATE TABLE {schema}.events (at timestamptz, what text)",
                       f'GRANT SELECT ON ALL TABLES IN SCHEMA {{schema}} TO "{role}"')
    try:
        params = {**cdc_source.server.connection_params(), "username": role}
        request = cdc_source.request(connection_params=params, source_table_name="events",
                                     dest_table_name="events")
        # When a cdc run starts, then it fails for good naming each change
        failed = run_once(request, "no-privileges")[-1]
        assert isinstance(failed, RunFailed) and failed.error.type == "CdcSetupError"
        message = failed.error.message
        assert f'ALTER ROLE "{role}" WITH REPLICATION' in message
        assert "REPLICA IDENTITY FULL" in message and "add a primary key" in message
        assert f"CREATE PUBLICATION etl_{cdc_source.data_source_id}_events FOR TABLE" in message
        # And cdc-check prints the same, one problem a line
        path = tmp_path / "request.json"
        path.write_text(json.dumps(request))
        env = {**os.environ, "GCP_PROJECT_ID": "etl-test", "BIGQUERY_DATASET": "unused"}
        checked = cdc_check(path, env)
        assert checked.returncode == 1
        problems = [line for line in checked.stdout.splitlines() if line.startswith("problem: ")]
        assert len(problems) == 3, checked.stdout
    finally:
        cdc_source.execute(f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_a_dropped_source_table_is_a_permanent_typed_error(cdc_source: CdcSource, run_once: RunOnce) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id) VALUES (1)")
    completed(run_once(cdc_source.request(), "dropped-1"))
    cdc_source.execute("DROP TABLE {schema}.items")
    failed = run_once(cdc_source.request(), "dropped-2")[-1]
    assert isinstance(failed, RunFailed) and not failed.error.retryable
    assert failed.error.type == "CdcSetupError" and "source table 'items' not found" in failed.error.message


def test_a_resnapshot_request_loads_the_table_again_from_a_new_slot(
    cdc_source: CdcSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    cdc_source.execute("INSERT INTO {schema}.items (id, qty) SELECT g, 0 FROM generate_series(1, 5) g")
    completed(run_once(cdc_source.request(), "again-1"))
    cdc_source.execute("UPDATE {schema}.items SET qty = 1 WHERE id = 1")
    # When a request asks for a fresh snapshot, then the table is loaded again from a new slot
    again = completed(run_once(cdc_source.request(cdc_resnapshot=True), "again-2"))
    assert again.cdc is not None and again.cdc["snapshot"] is True and again.cdc["inserts"] == 5
    # And the next run goes on from its consistent point
    cdc_source.execute("DELETE FROM {schema}.items WHERE id = 2")
    after = completed(run_once(cdc_source.request(), "again-3"))
    assert after.cdc is not None and after.cdc["start"] == again.cdc["end"] and after.cdc["deletes"] == 1
    assert dest(bq_client, bq_dataset) == source_rows(cdc_source)
