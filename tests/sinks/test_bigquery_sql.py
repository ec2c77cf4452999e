"""SQL text, names and ledger rows of the BigQuery sink: pure functions, no client."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from worker import errors
from worker.columns import Column
from worker.constants import STAGING_PREFIX
from worker.ledger import LedgerEntry
from worker.sinks import bigquery_sql as sql
from worker.sinks.base import MergePlan

ID = Column("id", "integer", pa.int64(), "INT64")
DOC = Column("doc", "jsonb", pa.string(), "JSON")
TAGS = Column("tags", "text[]", pa.list_(pa.string()), "STRING", repeated=True)
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,1024}")


def entry(window_high: str | None = None) -> LedgerEntry:
    return LedgerEntry(
        run_id="r-1", data_source_id=7, etl_run_id=None, dest_table="orders", load_type="catalog",
        window_column=None, window_low=None, window_high=window_high, rows_extracted=3, rows_loaded=3,
        batches_loaded=1, source_row_count=3, attempt=1, completed_seq=4, staging_token="abcd1234",
        started_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        committed_at=datetime(2024, 1, 2, 3, 4, 9, tzinfo=UTC), duration_seconds=4.5,
    )


# --- names ---------------------------------------------------------------------------------------
def test_ledger_fields_mirror_ledger_entry() -> None:
    assert sorted(name for name, _ in sql.LEDGER_FIELDS) == sorted(
        f.name for f in dataclasses.fields(LedgerEntry))


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        ("7f0c-11ee", "etl_7f0c-11ee_a2_tok_p3"),
        ("run/with spaces:and.dots", "etl_run_with_spaces_and_dots_a2_tok_p3"),
    ],
)
def test_load_job_id_is_deterministic_and_safe(run_id: str, expected: str) -> None:
    assert sql.load_job_id(run_id, 2, "tok", 3) == expected
    assert JOB_ID_RE.fullmatch(expected)


def test_resubmitted_job_ids_differ_and_commit_ids_are_named() -> None:
    assert sql.load_job_id("r", 1, "t", 0, resubmit=2) == "etl_r_a1_t_p0_r2"
    assert sql.commit_job_id("r", 1, "t") == "etl_r_a1_t_commit"
    assert sql.commit_job_id("r", 1, "t", resubmit=1) == "etl_r_a1_t_commit_r1"


def test_long_run_ids_keep_job_ids_within_bigquery_limits() -> None:
    value = sql.commit_job_id("x" * 5000, 99, "abcd1234", resubmit=3)
    assert JOB_ID_RE.fullmatch(value)


def test_staging_table_name_is_prefixed_and_sanitised() -> None:
    name = sql.staging_table_name("7f0c-11ee/x", 3, "beef0001")
    assert name == f"{STAGING_PREFIX}7f0c_11ee_x_a3_beef0001"


@pytest.mark.parametrize(
    ("project", "dataset", "table"),
    [("etl-test", "ds`x", "t"), ("etl-test", "ds", "t`; DROP"), ("Bad Project", "ds", "t"), ("p", "", "t")],
)
def test_invalid_identifiers_are_refused(project: str, dataset: str, table: str) -> None:
    with pytest.raises(errors.ConfigurationError):
        sql.table_sql(project, dataset, table)


def test_identifiers_are_quoted_part_by_part() -> None:
    quoted = sql.table_sql("example.com:proj-1", "raw_data", "orders")
    assert quoted == "`example.com:proj-1`.`raw_data`.`orders`"
    assert sql.quote_name("Order_Id") == "`Order_Id`"
    with pytest.raises(errors.ConfigurationError):
        sql.quote_name("a`b")


# --- DDL and queries -----------------------------------------------------------------------------
def test_add_columns_is_one_statement_with_nullable_columns() -> None:
    assert sql.add_columns_sql("`p`.`d`.`t`", [DOC, TAGS]) == (
        "ALTER TABLE `p`.`d`.`t` ADD COLUMN IF NOT EXISTS `doc` JSON, "
        "ADD COLUMN IF NOT EXISTS `tags` ARRAY<STRING>"
    )


def test_ledger_queries_are_parameterised() -> None:
    assert "@run_id" in sql.find_commit_sql("`p`.`d`.`l`")
    window = sql.last_window_high_sql("`p`.`d`.`l`")
    for name in ("@data_source_id", "@dest_table", "load_type IN ('transactional', 'merge')",
                 "ORDER BY window_high_key DESC"):
        assert name in window


def test_ledger_params_carry_every_field_typed() -> None:
    params = {p.name: (p.type_, p.value) for p in sql.ledger_params(entry())}
    assert params["run_id"] == ("STRING", "r-1")
    assert params["etl_run_id"] == ("INT64", None)
    assert params["committed_at"] == ("TIMESTAMP", datetime(2024, 1, 2, 3, 4, 9, tzinfo=UTC))
    assert params["duration_seconds"] == ("FLOAT64", 4.5)
    assert len(params) == len(sql.LEDGER_FIELDS)


def test_entry_from_row_round_trips() -> None:
    original = entry(window_high="2024-01-01T00:00:00.000000")
    assert sql.entry_from_row(dataclasses.asdict(original)) == original


def test_ledger_schema_requires_identity_columns() -> None:
    modes = {field.name: field.mode for field in sql.ledger_schema()}
    assert modes["run_id"] == "REQUIRED"
    assert modes["etl_run_id"] == "NULLABLE"


# --- the commit script ---------------------------------------------------------------------------
def script(replace: bool, dest_types: dict[str, str] | None = None) -> str:
    return sql.commit_script(
        dest="`p`.`d`.`orders`", staging="`p`.`d`.`_etl_staging_x`", ledger="`p`.`d`.`_etl_ledger`",
        columns=(ID, DOC, TAGS), dest_types=dest_types or {},
        apply=sql.Apply("replace" if replace else "append"),
    )


def test_catalog_script_replaces_inside_one_guarded_transaction() -> None:
    text = script(replace=True)
    order = [
        "DECLARE staged_rows INT64 DEFAULT (SELECT COUNT(*) FROM `p`.`d`.`_etl_staging_x`);",
        "BEGIN TRANSACTION;",
        "IF EXISTS (SELECT 1 FROM `p`.`d`.`_etl_ledger` WHERE run_id = @run_id) THEN",
        "ROLLBACK TRANSACTION;",
        "IF staged_rows != @rows_extracted THEN",
        "SELECT ERROR(FORMAT('etl-verification:",
        "DELETE FROM `p`.`d`.`orders` WHERE TRUE;",
        "INSERT INTO `p`.`d`.`orders` (`id`, `doc`, `tags`) SELECT `id`, PARSE_JSON(`doc`), `tags` "
        "FROM `p`.`d`.`_etl_staging_x`;",
        "INSERT INTO `p`.`d`.`_etl_ledger` (run_id, data_source_id,",
        "VALUES (@run_id, @data_source_id,",
        "COMMIT TRANSACTION;",
        "END IF;",
    ]
    position = 0
    for fragment in order:  # each one after the previous
        position = text.index(fragment, position) + len(fragment)
    assert text.endswith("END IF;")


def test_transactional_script_appends_without_delete() -> None:
    text = script(replace=False)
    assert "DELETE" not in text
    assert "INSERT INTO `p`.`d`.`orders`" in text


def test_widened_columns_are_cast_to_the_destination_type() -> None:
    assert "CAST(`id` AS NUMERIC)" in script(replace=False, dest_types={"id": "NUMERIC"})


def test_script_never_truncates_or_loads() -> None:
    text = script(replace=True).upper()
    assert "TRUNCATE" not in text and "WRITE_TRUNCATE" not in text


# --- cdc -------------------------------------------------------------------------------------------
def _cdc_script(kept: tuple[str, ...] = (), empty_first: bool = False) -> str:
    plan = MergePlan(key=("id",), cursor="_etl_seq", empty_first=empty_first)
    apply = sql.Apply("changes", plan, kept=kept)
    return sql.commit_script(dest="`p`.`d`.`t`", staging="`p`.`d`.`s`", ledger="`p`.`d`.`_etl_ledger`",
                             columns=[ID, DOC, TAGS], dest_types={}, apply=apply)


def test_a_cdc_commit_keeps_the_last_change_per_key_after_the_last_truncate() -> None:
    script = _cdc_script()
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY `_etl_seq` DESC) = 1" in script
    assert "`_etl_seq` > (SELECT IFNULL(MAX(`_etl_seq`), 0) FROM `p`.`d`.`s` WHERE `_etl_op` = 'T')" in script
    assert "IF EXISTS (SELECT 1 FROM `p`.`d`.`s` WHERE `_etl_op` = 'T') THEN" in script
    assert "WHEN MATCHED AND s.`_etl_op` = 'D' THEN DELETE" in script
    assert "LEFT JOIN" not in script  # no column was left unsent: no join
    # its ranges are their own chain in the ledger, apart from the windows of transactional and merge
    assert "load_type IN ('cdc')" in script and "'merge'" not in script
    assert "IF TRUE THEN\n    DELETE FROM `p`.`d`.`t` WHERE TRUE;" in _cdc_script(empty_first=True)


def test_a_column_some_change_did_not_send_takes_the_last_sent_value_else_the_destinations() -> None:
    script = _cdc_script(kept=("doc",))
    assert "MAX(IF(STRPOS(IFNULL(`_etl_unchanged`, ''), ',doc,') = 0, `_etl_seq`, NULL)) OVER" in script
    assert "LEFT JOIN `p`.`d`.`s` AS k0 ON k0.`_etl_seq` = l.`_etl_src_doc`" in script
    assert "PARSE_JSON(k0.`doc`) AS `doc`" in script
    assert "`doc` = IF(s.`_etl_sent_doc`, s.`doc`, d.`doc`)" in script
    assert "`tags` = s.`tags`" in script
