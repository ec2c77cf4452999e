"""`load_type: cdc` on MariaDB's binlog end to end: the first run loads a consistent snapshot with
the binlog position it matches, later runs apply inserts, updates, deletes and truncates, values
arrive exactly as the catalog path loads them, and what cannot work is refused naming the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests import forkserver
from tests.cdc.binlog_source import BinlogSource, binlog_source
from tests.e2e.oneshot import RunOnce
from tests.e2e.sources import normalise
from tests.e2e.stack import bq_rows
from worker.cdc import mysql as cdc_mysql
from worker.handlers.base import Outcome
from worker.messages import Event, RunCompleted, RunFailed

__all__ = ["binlog_source"]
ROOT = Path(__file__).resolve().parents[2]


def completed(events: list[Event]) -> RunCompleted:
    last = events[-1]
    assert isinstance(last, RunCompleted), last
    return last


def failed(events: list[Event]) -> RunFailed:
    last = events[-1]
    assert isinstance(last, RunFailed), last
    return last


def cdc(event: RunCompleted) -> dict[str, Any]:
    assert event.cdc is not None
    return event.cdc


def dest(bq_client: bigquery.Client, dataset: str, table: str = "items") -> list[tuple[Any, ...]]:
    return [normalise(row) for row in bq_rows(bq_client, dataset, table, "id")]


def source_rows(source: BinlogSource) -> list[tuple[Any, ...]]:
    """As BigQuery holds them: JSON parsed, a SET as MySQL's text."""
    out = []
    for row in source.rows():
        values = list(row)
        values[4] = json.loads(values[4]) if values[4] is not None else None
        values[6] = ",".join(m for m in ("a", "b", "c") if m in values[6]) if values[6] is not None else None
        out.append(normalise(tuple(values)))
    return out


def cdc_check(request: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    env = {**os.environ, "GCP_PROJECT_ID": "etl-test", "BIGQUERY_DATASET": "unused"}
    return forkserver.run([sys.executable, "-m", "worker", "cdc-check", "--request", str(path)], cwd=ROOT,
                          env=env, timeout=60)


def seed(source: BinlogSource, rows: int) -> None:
    source.execute(
        "INSERT INTO {schema}.items SELECT seq, CONCAT('n', seq), seq, seq * 1.5, JSON_OBJECT('g', seq), "
        f"REPEAT('x', 10), 'a,c', TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_{rows}")


def test_cdc_loads_a_consistent_snapshot_then_applies_every_kind_of_change(
    binlog_source: BinlogSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a table with rows
    seed(binlog_source, 30)
    # When the first cdc run loads it, at the binlog position its snapshot matches
    first = cdc(completed(run_once(binlog_source.request(), "b-1")))
    assert first["snapshot"] is True and first["inserts"] == 30 and first["binlog_end"].startswith("binlog.")
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source)
    # And rows are inserted, updated (twice in one transaction), deleted, re-keyed
    binlog_source.execute("INSERT INTO {schema}.items (id, name) VALUES (100, 'new')",
                          "UPDATE {schema}.items SET qty = 1000 WHERE id = 5",
                          "UPDATE {schema}.items SET qty = qty + 1, name = 'twice' WHERE id = 5",
                          "DELETE FROM {schema}.items WHERE id IN (7, 8)")
    binlog_source.execute("UPDATE {schema}.items SET id = 900 WHERE id = 9")
    second = cdc(completed(run_once(binlog_source.request(), "b-2")))
    # Then the second run applies exactly those changes, from where the first ended
    assert second["snapshot"] is False and second["start"] == first["end"]
    assert second["binlog_start"] == first["binlog_end"]
    assert (second["inserts"], second["updates"], second["deletes"]) == (1, 3, 2)
    assert second["transactions"] == 2 and second["lag_seconds"] is not None
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source)
    # And a run with nothing new applies nothing and keeps the position
    third = cdc(completed(run_once(binlog_source.request(), "b-3")))
    assert third["start"] == second["end"]
    assert (third["inserts"], third["updates"], third["deletes"]) == (0, 0, 0)
    # And a TRUNCATE followed by inserts leaves only the new rows
    binlog_source.execute("TRUNCATE {schema}.items")
    binlog_source.execute("INSERT INTO {schema}.items (id, name) VALUES (1, 'after')")
    fourth = cdc(completed(run_once(binlog_source.request(), "b-4")))
    assert fourth["truncates"] == 1 and fourth["inserts"] == 1
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source)


def test_a_column_added_at_the_source_is_added_in_bigquery(
    binlog_source: BinlogSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    binlog_source.execute("INSERT INTO {schema}.items (id, name) VALUES (1, 'a'), (2, 'b')")
    completed(run_once(binlog_source.request(), "evolve-1"))
    binlog_source.execute("UPDATE {schema}.items SET name = 'before' WHERE id = 1")
    binlog_source.execute("ALTER TABLE {schema}.items ADD COLUMN extra int")
    binlog_source.execute("INSERT INTO {schema}.items (id, name, extra) VALUES (3, 'c', 33)",
                          "UPDATE {schema}.items SET extra = 22 WHERE id = 2")
    second = cdc(completed(run_once(binlog_source.request(), "evolve-2")))
    assert second["kept_columns"] == ["extra"]  # the update before the ALTER did not have it
    with binlog_source.engine.connect() as conn:
        query = sa.text(f"SELECT id, extra FROM `{binlog_source.schema}`.items")
        extra: dict[int, int | None] = {row[0]: row[1] for row in conn.execute(query)}
    assert {row[0]: row[-1] for row in dest(bq_client, bq_dataset)} == extra == {1: None, 2: 22, 3: 33}


# Every MariaDB type the type map loads, with the awkward values (docs/types.md).
GOLDEN_DDL = """CREATE TABLE {schema}.golden (
  id int PRIMARY KEY, b tinyint(1), ti tinyint, si smallint unsigned, mi mediumint, i int unsigned,
  bi bigint, ubi bigint unsigned, d1 decimal(20, 4), d2 decimal(38, 9), d3 decimal(65, 0),
  f float, db double, vc varchar(20), ch char(5), tx text, en enum('x', 'y z'), st set('p', 'q', 'r'),
  bl blob, vb varbinary(8), bt bit(5), b64 bit(64), yr year, dt date, dtt datetime(6),
  ts timestamp(6) NULL, tm time(3), js json, ut varchar(20) CHARACTER SET utf8mb4)"""
GOLDEN_VALUES = [
    "(1, 1, -128, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615, "
    "1234567890123456.7891, 12345678901234567890123456789.123456789, "
    "99999999999999999999999999999999999999999999999999999999999999999, 1.1, 2.2250738585072014e-308, "
    "'tab\\there', 'ab  ', 'multi\\nline', 'y z', 'p,r', x'00ff10', x'0a0b', b'10101', "
    "b'1111111111111111111111111111111111111111111111111111111111111111', 2155, '2024-02-29', "
    "'9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '-838:59:59.000', "
    "'{{\"k\": [1, 2.50, \"é\"], \"n\": null}}', 'żółć 🦆')",
    "(2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0.0, 0, '', '', '', 'x', '', x'', x'', b'0', b'0', 0, '0000-00-00', "
    "'0000-00-00 00:00:00', '0000-00-00 00:00:00', '25:00:00.5', '[]', '')",
    "(3, 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, 1901, '2024-00-10', '1000-01-01 00:00:00', '1970-01-01 00:00:01', "
    "'12:34:56.789', NULL, NULL)",
]


def test_changed_rows_arrive_exactly_as_the_catalog_path_loads_them(
    binlog_source: BinlogSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a table of every type, and its rows loaded by the first cdc run (the snapshot: the
    # ordinary reader)
    source = binlog_source
    source.execute("SET SESSION sql_mode = ''", GOLDEN_DDL, "INSERT INTO {schema}.golden VALUES "
                   + ", ".join(GOLDEN_VALUES))
    request = source.request(source_table_name="golden", dest_table_name="golden")
    first = completed(run_once(request, "golden-1"))
    # When the same values are written again under other keys (inserts), and updated into place
    copy = f"INSERT INTO {{schema}}.golden SELECT id + 10, {_other_columns(source)} FROM {{schema}}.golden"
    source.execute("SET SESSION sql_mode = ''", f"{copy} WHERE id < 10",
                   "UPDATE {schema}.golden SET b = NULL, dt = NULL WHERE id < 10")
    source.execute("SET SESSION sql_mode = ''",
                   "UPDATE {schema}.golden g JOIN {schema}.golden o ON o.id = g.id + 10 SET g.b = o.b, "
                   "g.dt = o.dt WHERE g.id < 10")
    second = completed(run_once(request, "golden-2"))
    # Then every value of the changed rows equals the snapshot's of the same values, and a catalog
    # load of the same table into another destination agrees too
    assert cdc(second)["inserts"] == 3 and cdc(second)["updates"] == 6
    rows = {row[0]: row[1:] for row in dest(bq_client, bq_dataset, "golden")}
    assert [rows[key + 10] for key in (1, 2, 3)] == [rows[key] for key in (1, 2, 3)]
    catalog = completed(run_once({**request, "load_type": "catalog", "dest_table_name": "golden_catalog"},
                                 "golden-catalog"))
    assert dest(bq_client, bq_dataset, "golden_catalog") == dest(bq_client, bq_dataset, "golden")
    # And values BigQuery cannot hold are counted as the catalog path counts them (zero dates, TIME
    # past 24h, TINYINT(1) holding 2): the changes held each three times (the insert, both
    # updates), b and dt twice (the first update set them NULL)
    assert first.values_nulled  # the catalog run read each row twice (ids 1-3 and 11-13)
    assert catalog.values_nulled == {column: 2 * count for column, count in first.values_nulled.items()}
    assert second.values_nulled == {column: (2 if column in ("b", "dt") else 3) * count
                                    for column, count in first.values_nulled.items()}


def _other_columns(source: BinlogSource) -> str:
    with source.engine.connect() as conn:
        names = [row[0] for row in conn.execute(sa.text(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :s AND TABLE_NAME = "
            "'golden' AND COLUMN_NAME <> 'id' ORDER BY ORDINAL_POSITION"), {"s": source.schema})]
    return ", ".join(f"`{name}`" for name in names)


def purge_past(source: BinlogSource, file: str) -> None:
    """Purge the binary logs up to and including `file` (MariaDB keeps a file until its binlog
    checkpoint has passed it: rotate and purge again until it is gone)."""
    with source.server.admin_engine().connect() as conn:
        for _ in range(100):
            conn.execute(sa.text("FLUSH BINARY LOGS"))
            current = conn.execute(sa.text("SHOW MASTER STATUS")).one()[0]
            conn.execute(sa.text(f"PURGE BINARY LOGS TO '{current}'"))
            if conn.execute(sa.text("SHOW BINARY LOGS")).first()[0] > file:  # type: ignore[index]
                return
            time.sleep(0.1)
    raise AssertionError(f"{file} was never purged")


def test_a_purged_binlog_is_a_permanent_error_saying_how_to_load_again(
    binlog_source: BinlogSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given a table loaded by cdc, and binary logs purged past its position
    seed(binlog_source, 5)
    first = cdc(completed(run_once(binlog_source.request(), "purged-1")))
    binlog_source.execute("UPDATE {schema}.items SET qty = -1 WHERE id = 1")
    purge_past(binlog_source, first["binlog_end"].split(":")[0])
    # When the next run starts, then it fails for good, saying how to load the table again
    error = failed(run_once(binlog_source.request(), "purged-2")).error
    assert not error.retryable and error.type == "BinlogPurgedError"
    assert '"cdc_resnapshot": true' in error.message and first["binlog_end"] in error.message
    # And a request saying so loads a fresh snapshot; the runs after it go on from its position
    again = cdc(completed(run_once(binlog_source.request(cdc_resnapshot=True), "purged-3")))
    assert again["snapshot"] is True
    binlog_source.execute("DELETE FROM {schema}.items WHERE id = 2")
    after = cdc(completed(run_once(binlog_source.request(), "purged-4")))
    assert after["start"] == again["end"] and after["deletes"] == 1
    assert dest(bq_client, bq_dataset) == source_rows(binlog_source)


def test_cdc_on_a_server_without_a_binlog_fails_permanently_naming_the_setting(
    mysql_db: str, mysql_admin: sa.Engine, run_once: RunOnce, tmp_path: Path
) -> None:
    # Given the machine's MariaDB (no binary log) and a table
    with mysql_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE TABLE `{mysql_db}`.items (id bigint PRIMARY KEY, name text)"))
    request = {"data_source_id": 5, "source_type": "mysql", "source_table_name": "items",
               "connection_params": {"host": "127.0.0.1", "port": 3306, "database": mysql_db,
                                     "username": "root"},
               "dest_table_name": "items", "load_type": "cdc"}
    # When a cdc run starts, then it fails for good, saying what to change
    error = failed(run_once(request, "no-binlog", expect=Outcome.ACK)).error
    assert not error.retryable and error.type == "CdcSetupError"
    assert "log_bin is OFF, CDC needs the binary log" in error.message
    # And cdc-check says the same without running anything
    checked = cdc_check(request, tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "problem: log_bin is OFF, CDC needs the binary log" in checked.stdout
    assert "point-in-time recovery" in checked.stdout


def test_missing_binlog_settings_and_privileges_are_each_named_with_their_fix(
    binlog_source: BinlogSource, run_once: RunOnce, tmp_path: Path
) -> None:
    # Given a user who may only read, and a server whose row image is MINIMAL
    user = f"etl_{binlog_source.schema}"[:32]
    admin = binlog_source.server.admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%'"))
        conn.execute(sa.text(f"GRANT SELECT ON `{binlog_source.schema}`.* TO '{user}'@'%'"))
        conn.execute(sa.text("SET GLOBAL binlog_row_image = 'MINIMAL'"))
    try:
        params = {**binlog_source.request()["connection_params"], "username": user}
        request = binlog_source.request(connection_params=params)
        # When a cdc run starts, then it fails for good naming each change
        error = failed(run_once(request, "no-privileges")).error
        assert error.type == "CdcSetupError" and not error.retryable
        assert "binlog_row_image is MINIMAL, CDC needs FULL: run SET GLOBAL binlog_row_image = 'FULL'" in (
            error.message)
        assert f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {user}@%" in error.message
        assert f"GRANT CREATE TEMPORARY TABLES ON `{binlog_source.schema}`.*" in error.message
        # And cdc-check prints the same, one problem a line
        checked = cdc_check(request, tmp_path)
        assert checked.returncode == 1
        problems = [line for line in checked.stdout.splitlines() if line.startswith("problem: ")]
        assert len(problems) == 3, checked.stdout
        assert "binlog_row_image=full" in checked.stdout  # the Cloud SQL flag
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SET GLOBAL binlog_row_image = 'FULL'"))
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))


def test_cdc_check_says_ready_on_a_binlog_server(binlog_source: BinlogSource, tmp_path: Path) -> None:
    checked = cdc_check(binlog_source.request(cdc_server_id=4242), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ready: a cdc run can start" in checked.stdout
    assert "server_id 4242" in checked.stdout and "binlog now at binlog." in checked.stdout


def test_on_mysql_a_user_without_reload_is_told_to_grant_it(
    binlog_source: BinlogSource, run_once: RunOnce, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given MySQL (no binlog_snapshot_position: the snapshot opens under FLUSH TABLES WITH READ
    # LOCK) and a user with every binlog grant but RELOAD
    monkeypatch.setattr(cdc_mysql.Server, "mariadb", property(lambda self: False))
    user = f"etl_{binlog_source.schema}"[:32]
    admin = binlog_source.server.admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%'"))
        conn.execute(sa.text(f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%'"))
        conn.execute(sa.text(f"GRANT SELECT, CREATE TEMPORARY TABLES ON `{binlog_source.schema}`.* "
                             f"TO '{user}'@'%'"))
    try:
        params = {**binlog_source.request()["connection_params"], "username": user}
        error = failed(run_once(binlog_source.request(connection_params=params), "no-reload")).error
        # Then the one problem is RELOAD, with its grant
        assert error.type == "CdcSetupError" and error.message.count("; ") == 0, error.message
        assert f"GRANT RELOAD ON *.* TO {user}@%" in error.message
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))


def test_a_missing_table_or_key_is_named(binlog_source: BinlogSource, run_once: RunOnce) -> None:
    binlog_source.execute("CREATE TABLE {schema}.events (at datetime, what text)")
    missing = failed(run_once(binlog_source.request(source_table_name="nope"), "no-table")).error
    assert missing.type == "CdcSetupError" and "source table 'nope' not found" in missing.message
    keyless = failed(run_once(binlog_source.request(source_table_name="events", dest_table_name="events"),
                              "no-key")).error
    assert keyless.type == "CdcSetupError" and "events has no primary key" in keyless.message


@pytest.mark.parametrize(("column_type", "zero"), [
    ("DATE", "0000-00-00"), ("DATETIME", "0000-00-00 00:00:00"), ("TIMESTAMP NULL", "0000-00-00 00:00:00")])
def test_strict_types_refuses_a_zero_date_from_the_binlog_as_the_catalog_path_does(
    binlog_source: BinlogSource, run_once: RunOnce, column_type: str, zero: str,
) -> None:
    # Given a strict cdc table loaded by its first run
    source = binlog_source
    source.execute(f"CREATE TABLE {{schema}}.dates (id INT PRIMARY KEY, d {column_type})",
                   "INSERT INTO {schema}.dates VALUES (1, '2024-01-01')")
    request = source.request(source_table_name="dates", dest_table_name="dates", strict_types=True)
    completed(run_once(request, "strict-1"))
    # When a zero date reaches the binlog
    source.execute("SET SESSION sql_mode = ''", f"INSERT INTO {{schema}}.dates VALUES (2, '{zero}')")
    # Then the next run fails for good, as a strict catalog run of the same table does
    error = failed(run_once(request, "strict-2")).error
    catalog = failed(run_once({**request, "load_type": "catalog", "dest_table_name": "dates_catalog"},
                              "strict-catalog")).error
    assert (error.type, error.retryable) == (catalog.type, catalog.retryable) == ("SourceDataError", False)


def test_a_primary_key_that_changes_type_is_a_permanent_typed_error(
    binlog_source: BinlogSource, run_once: RunOnce,
) -> None:
    binlog_source.execute("INSERT INTO {schema}.items (id, name) VALUES (1, 'a')")
    completed(run_once(binlog_source.request(), "rekey-1"))
    binlog_source.execute("INSERT INTO {schema}.items (id, name) VALUES (2, 'b')")
    binlog_source.execute("ALTER TABLE {schema}.items MODIFY id varchar(20)")
    error = failed(run_once(binlog_source.request(), "rekey-2")).error
    assert not error.retryable and error.type == "SchemaMismatchError" and "'id'" in error.message, error


def test_a_dropped_source_table_is_a_permanent_typed_error(binlog_source: BinlogSource, run_once: RunOnce
                                                           ) -> None:
    binlog_source.execute("INSERT INTO {schema}.items (id) VALUES (1)")
    completed(run_once(binlog_source.request(), "dropped-1"))
    binlog_source.execute("DROP TABLE {schema}.items")
    error = failed(run_once(binlog_source.request(), "dropped-2")).error
    assert not error.retryable and error.type == "CdcSetupError", error
    assert "source table 'items' not found" in error.message
