"""A job's commit script, as text: ONE transaction with every table's checks, apply and ledger row;
parameter names distinct per table; a one-table job's script is the single-table one."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from worker import errors
from worker.columns import Column
from worker.constants import MAX_JOB_TABLES
from worker.ledger import LedgerEntry
from worker.sinks import bigquery_sql as sql
from worker.sinks.base import MergePlan
from worker.sinks.emulator_compat import inline_parameters

ID = Column("id", "integer", pa.int64(), "INT64")
TS = Column("ts", "timestamp", pa.timestamp("us", "UTC"), "TIMESTAMP")
LEDGER, HEADS = "`p`.`d`.`_etl_ledger`", "`p`.`d`.`_etl_heads`"
APPLIES = [sql.Apply("merge", MergePlan(("id",), "ts", reconcile=True), "`p`.`d`.`s0_keys`"),
           sql.Apply("replace"), sql.Apply("append")]


def part(index: int, count: int) -> sql.TableScript:
    return sql.TableScript(dest=f"`p`.`d`.`t{index}`", staging=f"`p`.`d`.`s{index}`", columns=(ID, TS),
                           dest_types={}, apply=APPLIES[index], name=f"t{index}" if count > 1 else None,
                           prefix=sql.job_prefix(index, count))


def entry(index: int) -> LedgerEntry:
    return LedgerEntry(
        run_id="job-1", data_source_id=7, etl_run_id=None, dest_table=f"t{index}", load_type="catalog",
        window_column=None, window_low=None, window_high=None, rows_extracted=3, rows_loaded=3,
        batches_loaded=1, source_row_count=3, attempt=1, completed_seq=9, staging_token=f"tok{index}",
        started_at=datetime(2024, 1, 2, tzinfo=UTC), committed_at=datetime(2024, 1, 2, 0, 1, tzinfo=UTC),
        duration_seconds=4.5, table_index=index, keys_extracted=3 if index == 0 else None)


def three_table_script() -> str:
    return sql.job_script(ledger=LEDGER, heads=HEADS, tables=[part(i, 3) for i in range(3)])


def test_a_job_is_one_transaction_checking_and_applying_every_table_before_its_ledger_rows() -> None:
    text = three_table_script()
    assert text.count("BEGIN TRANSACTION;") == text.count("COMMIT TRANSACTION;") == 1
    assert text.count(f"FROM {LEDGER} WHERE run_id = @t0_run_id") == 1  # "already applied": once
    order = [
        "DECLARE t0_staged_rows", "DECLARE t0_staged_keys", "DECLARE t1_staged_rows",
        "DECLARE t2_staged_rows",
        "BEGIN TRANSACTION;", "ROLLBACK TRANSACTION;", "ELSE",
        "IF t0_staged_rows != @t0_rows_extracted", "staging of t0 holds %d rows",
        "IF t0_staged_keys != @t0_keys_extracted", "an overlapping window of table t0",
        "WHERE dest_table = @t0_dest_table;", "MERGE `p`.`d`.`t0`",
        "DELETE FROM `p`.`d`.`t0` AS d WHERE NOT EXISTS",
        "IF t1_staged_rows != @t1_rows_extracted", "a newer snapshot of table t1", "DELETE FROM `p`.`d`.`t1`",
        "INSERT INTO `p`.`d`.`t1`", "IF t2_staged_rows != @t2_rows_extracted", "INSERT INTO `p`.`d`.`t2`",
        f"INSERT INTO {LEDGER} (", "VALUES (@t0_run_id,", "), (@t1_run_id,", "), (@t2_run_id,",
        "COMMIT TRANSACTION;", "END IF;",
    ]
    position = 0
    for fragment in order:  # each one after the previous
        position = text.index(fragment, position) + len(fragment)
    assert text.count("INSERT INTO `p`.`d`.`_etl_ledger`") == 1  # one statement: one CURRENT_TIMESTAMP()


def test_every_parameter_of_a_job_script_is_given_once_per_table() -> None:
    params = sql.job_params([entry(i) for i in range(3)])
    names = [p.name for p in params]
    assert len(names) == len(set(names)) == 3 * len(sql.LEDGER_FIELDS)
    by_name = {p.name: p.value for p in params}
    assert (by_name["t0_dest_table"], by_name["t2_dest_table"], by_name["t1_table_index"]) == ("t0", "t2", 1)
    text = three_table_script()
    used = set(re.findall(r"@(\w+)", text))
    assert used <= set(names)
    assert "@" not in inline_parameters(text, params)  # the emulator's inlining finds every one


def test_a_one_table_job_is_the_single_table_script_with_its_plain_parameters() -> None:
    single = sql.commit_script(dest="`p`.`d`.`t0`", staging="`p`.`d`.`s0`", ledger=LEDGER, heads=HEADS,
                               columns=(ID, TS), dest_types={}, apply=APPLIES[0])
    assert sql.job_script(ledger=LEDGER, heads=HEADS, tables=[part(0, 1)]) == single
    assert "@run_id" in single and "t0_" not in single.replace("`t0`", "")
    assert [p.name for p in sql.job_params([entry(0)])] == [name for name, _ in sql.LEDGER_FIELDS]


@pytest.mark.parametrize("count", [0, MAX_JOB_TABLES + 1])
def test_a_job_the_transaction_cannot_hold_is_refused(count: int) -> None:
    tables = [dataclasses.replace(part(0, 2), prefix=f"t{i}_") for i in range(count)]
    with pytest.raises(errors.ConfigurationError, match="1 to 98 tables in one BigQuery transaction"):
        sql.job_script(ledger=LEDGER, heads=HEADS, tables=tables)
