"""SQL text, names and ledger rows for the BigQuery sink, as pure functions (no client, no I/O).

Every identifier is validated and quoted with backticks; every value travels as a query parameter.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.cloud import bigquery

from worker import errors
from worker.columns import STAGED_AS_STRING, Column
from worker.constants import STAGING_PREFIX
from worker.ledger import LedgerEntry

# BigQuery's rules: dataset ids are letters, digits and underscores (1024 at most); project ids
# may carry a domain prefix ("example.com:proj"). Table and column names are held to the portable
# subset the sources already produce, so that no name can break out of its backticks.
_DATASET_RE = re.compile(r"[A-Za-z0-9_]{1,1024}")
_PROJECT_RE = re.compile(r"[a-z][a-z0-9.:-]{0,127}[a-z0-9]|[a-z]")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TABLE_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
MAX_JOB_ID_CHARS = 1024
_RUN_ID_CHARS = 128  # run ids are UUID-like; the cap only guards the 1024-char job id limit

# Raised from inside the commit script; the sink turns a failure carrying it into VerificationError.
VERIFICATION_MARKER = "etl-verification:"
# ... into SupersededError: a concurrent run committed an overlapping window or a newer snapshot.
SUPERSEDED_MARKER = "etl-superseded:"
# One row per destination table, updated inside every commit transaction. Two transactions that
# UPDATE the same row conflict on real BigQuery (the later one aborts with "concurrent update" and
# is retried), so the overlap guard below cannot be passed by two runs at once (no write skew).
HEADS_FIELDS: tuple[tuple[str, str], ...] = (
    ("dest_table", "STRING"),
    ("version", "INT64"),
    ("last_run_id", "STRING"),
    ("updated_at", "TIMESTAMP"),
)

# The ledger's columns, in table order, with their BigQuery types: one per LedgerEntry field,
# derived from its annotation (structures are stored as JSON text; see `_LEDGER_CODECS`).
_SCALAR_BQ_TYPES: Mapping[str, str] = {
    "str": "STRING", "int": "INT64", "float": "FLOAT64", "datetime": "TIMESTAMP", "bool": "BOOL",
}
_STRUCTURED = ("Mapping[", "tuple[")


def _bq_type_of(annotation: str) -> str:
    """`int | None` → INT64; `Mapping[str, int]` / `tuple[str, ...]` → STRING (JSON text)."""
    if annotation.startswith(_STRUCTURED):
        return "STRING"
    kinds = {part.strip() for part in annotation.split("|")} - {"None"}
    if len(kinds) != 1 or next(iter(kinds)) not in _SCALAR_BQ_TYPES:
        raise TypeError(f"no ledger column type for a LedgerEntry field annotated {annotation!r}")
    return _SCALAR_BQ_TYPES[kinds.pop()]


LEDGER_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.name, _bq_type_of(str(f.type))) for f in dataclasses.fields(LedgerEntry)
)
_LEDGER_REQUIRED = frozenset({"run_id", "data_source_id", "dest_table", "load_type", "staging_token"})


# --- identifiers ---------------------------------------------------------------------------------
def _checked(kind: str, name: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(name):
        raise errors.ConfigurationError(f"invalid BigQuery {kind} name: {name!r}")
    return name


def quote_name(name: str) -> str:
    """A column or table name, validated, in backticks."""
    return f"`{_checked('column', name, _NAME_RE)}`"


def table_sql(project: str, dataset: str, table: str) -> str:
    """`project`.`dataset`.`table`, each part validated."""
    return ".".join(
        (
            f"`{_checked('project', project, _PROJECT_RE)}`",
            f"`{_checked('dataset', dataset, _DATASET_RE)}`",
            f"`{_checked('table', table, _TABLE_RE)}`",
        )
    )


def validate_dataset(dataset: str) -> str:
    return _checked("dataset", dataset, _DATASET_RE)


def validate_table(table: str) -> str:
    return _checked("table", table, _TABLE_RE)


# --- names of staging tables and jobs ----------------------------------------------------------
def staging_table_name(run_id: str, attempt: int, token: str) -> str:
    """`_etl_staging_<run>_a<attempt>_<token>`: unique per delivery, traceable to its run."""
    run = _TABLE_UNSAFE.sub("_", run_id)[:_RUN_ID_CHARS]
    return validate_table(f"{STAGING_PREFIX}{run}_a{attempt}_{_TABLE_UNSAFE.sub('_', token)}")


def job_id(run_id: str, attempt: int, token: str, step: str, resubmit: int = 0) -> str:
    """`etl_<run>_a<attempt>_<token>_<step>`, plus `_r<n>` when a failed job is resubmitted.

    Deterministic, so that an insert retried after a lost response meets its own job (409) instead
    of starting a second one; a job that *failed* cannot be rerun under its id, hence `_r<n>`.
    """
    run = _JOB_ID_UNSAFE.sub("_", run_id)[:_RUN_ID_CHARS]
    suffix = f"_r{resubmit}" if resubmit else ""
    value = f"etl_{run}_a{attempt}_{_JOB_ID_UNSAFE.sub('_', token)}_{step}{suffix}"
    if len(value) > MAX_JOB_ID_CHARS:
        raise ValueError(f"job id longer than {MAX_JOB_ID_CHARS} characters: {value[:80]}...")
    return value


def load_job_id(run_id: str, attempt: int, token: str, part: int, resubmit: int = 0) -> str:
    return job_id(run_id, attempt, token, f"p{part}", resubmit)


def commit_job_id(run_id: str, attempt: int, token: str, resubmit: int = 0) -> str:
    return job_id(run_id, attempt, token, "commit", resubmit)


# --- DDL ---------------------------------------------------------------------------------------
def column_ddl_type(column: Column) -> str:
    return f"ARRAY<{column.bq_type}>" if column.repeated else column.bq_type


def add_column_clause(column: Column) -> str:
    # IF NOT EXISTS: a retried ALTER (or a concurrent run adding the same column) is a no-op.
    return f"ADD COLUMN IF NOT EXISTS {quote_name(column.name)} {column_ddl_type(column)}"


def add_columns_sql(table: str, columns: Sequence[Column]) -> str:
    """One ALTER for all new columns: real BigQuery allows 5 metadata updates per table per 10 s."""
    return f"ALTER TABLE {table} " + ", ".join(add_column_clause(col) for col in columns)


# --- ledger queries ----------------------------------------------------------------------------
def find_commit_sql(ledger: str) -> str:
    return f"SELECT * FROM {ledger} WHERE run_id = @run_id ORDER BY committed_at LIMIT 1"


def last_window_high_sql(ledger: str) -> str:
    """The window_high of the most recently committed transactional entry for the source + table.

    Runs of one source and table commit windows in order (each starts at the previous high), so the
    latest committed high is the greatest one; comparing texts as values is the caller's business.
    """
    return (
        f"SELECT window_high FROM {ledger} "
        "WHERE data_source_id = @data_source_id AND dest_table = @dest_table "
        "AND load_type = @load_type AND window_high IS NOT NULL "
        "ORDER BY window_high_key DESC, committed_at DESC LIMIT 1"
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _counts_from_text(text: str | None) -> dict[str, int]:
    return {str(name): int(count) for name, count in json.loads(text).items()} if text else {}


def _texts_from_text(text: str | None) -> tuple[str, ...]:
    return tuple(str(item) for item in json.loads(text)) if text else ()


# Ledger columns that hold a structure, as JSON text: (to the parameter, from the row). Every
# other column holds its LedgerEntry field as is. Rows written before a column existed read NULL.
_CODECS_BY_KIND: Mapping[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "Mapping[": (lambda counts: _json_text(dict(counts)), _counts_from_text),
    "tuple[": (lambda texts: _json_text(list(texts)), _texts_from_text),
}
_LEDGER_CODECS: Mapping[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    f.name: codec
    for f in dataclasses.fields(LedgerEntry)
    for kind, codec in _CODECS_BY_KIND.items()
    if str(f.type).startswith(kind)
}


def _encoded(name: str, value: Any) -> Any:
    codec = _LEDGER_CODECS.get(name)
    return value if codec is None else codec[0](value)


def _decoded(name: str, value: Any) -> Any:
    codec = _LEDGER_CODECS.get(name)
    return value if codec is None else codec[1](value)


def recent_entries_sql(ledger: str, by_data_source: bool) -> str:
    """The newest ledger entries first (@limit of them), optionally of one @data_source_id."""
    where = "WHERE data_source_id = @data_source_id " if by_data_source else ""
    return f"SELECT * FROM {ledger} {where}ORDER BY committed_at DESC, run_id LIMIT @limit"


def ledger_params(entry: LedgerEntry) -> list[bigquery.ScalarQueryParameter]:
    """One query parameter per ledger column, named after it."""
    return [
        bigquery.ScalarQueryParameter(name, bq_type, _encoded(name, getattr(entry, name)))
        for name, bq_type in LEDGER_FIELDS
    ]


def entry_from_row(row: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(**{name: _decoded(name, row.get(name)) for name, _ in LEDGER_FIELDS})


def ledger_schema() -> list[bigquery.SchemaField]:
    return [
        bigquery.SchemaField(name, bq_type, mode="REQUIRED" if name in _LEDGER_REQUIRED else "NULLABLE")
        for name, bq_type in LEDGER_FIELDS
    ]


# --- the commit script -------------------------------------------------------------------------
def select_expr(column: Column, dest_type: str) -> str:
    """How a staged column becomes a destination value: JSON parsed, widened types cast (element by
    element for an array, keeping its order)."""
    name = quote_name(column.name)
    if column.bq_type in STAGED_AS_STRING:
        convert = STAGED_AS_STRING[column.bq_type]
        if column.repeated:
            item = convert.format("item")
            return f"ARRAY(SELECT {item} FROM UNNEST({name}) AS item WITH OFFSET AS pos ORDER BY pos)"
        return convert.format(name)
    if dest_type != column.bq_type:
        return f"CAST({name} AS {f'ARRAY<{dest_type}>' if column.repeated else dest_type})"
    return name


def ensure_head_sql(heads: str) -> str:
    """Create this destination's heads row if missing (outside the transaction; idempotent)."""
    return (
        f"MERGE {heads} AS h USING (SELECT @dest_table AS dest_table) AS s "
        "ON h.dest_table = s.dest_table "
        "WHEN NOT MATCHED THEN INSERT (dest_table, version) VALUES (s.dest_table, 0)"
    )


def heads_schema() -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, bq_type) for name, bq_type in HEADS_FIELDS]


def guard_sql(ledger: str, replace: bool) -> str:
    """Refuse (inside the transaction) a run that a concurrent one has overtaken.

    Transactional: a committed window of this source and table overlapping [low, high).
    Catalog: a committed snapshot of this table taken later than ours (older never wins).
    """
    if replace:
        condition = (
            f"SELECT 1 FROM {ledger} WHERE dest_table = @dest_table AND load_type = 'catalog' "
            "AND snapshot_at > @snapshot_at"
        )
        reason = "a newer snapshot of this table is already committed"
    else:
        condition = (
            f"SELECT 1 FROM {ledger} WHERE dest_table = @dest_table "
            "AND data_source_id = @data_source_id AND load_type = 'transactional' "
            "AND (@window_low_key IS NULL OR window_high_key > @window_low_key) "
            "AND (window_low_key IS NULL OR window_low_key < @window_high_key)"
        )
        reason = "an overlapping window of this table is already committed"
    return (
        f"  IF EXISTS ({condition}) THEN\n"
        f"    SELECT ERROR('{SUPERSEDED_MARKER} {reason}');\n"
        "  END IF;\n"
    )


def commit_script(
    *, dest: str, staging: str, ledger: str, columns: Sequence[Column],
    dest_types: Mapping[str, str], replace: bool, heads: str | None = None,
) -> str:
    """One script: verify the staged count, then apply the run and record it, or do nothing.

    The count check sits inside the ELSE branch so that a delivery that finds the run already
    applied returns the ledger entry in force rather than failing on its own staging table; an
    error raised there rolls the transaction back (nothing has been written yet anyway).
    Parameters: @run_id, @rows_extracted and one per ledger column (see `ledger_params`).
    """
    names = ", ".join(quote_name(col.name) for col in columns)
    exprs = ", ".join(select_expr(col, dest_types.get(col.name, col.bq_type)) for col in columns)
    ledger_cols = ", ".join(name for name, _ in LEDGER_FIELDS)
    ledger_vals = ", ".join(f"@{name}" for name, _ in LEDGER_FIELDS)
    delete = f"  DELETE FROM {dest} WHERE TRUE;\n" if replace else ""
    bump_head = (
        f"  UPDATE {heads} SET version = version + 1, last_run_id = @run_id, "
        "updated_at = @committed_at WHERE dest_table = @dest_table;\n"
    ) if heads else ""
    return (
        f"DECLARE staged_rows INT64 DEFAULT (SELECT COUNT(*) FROM {staging});\n"
        "BEGIN TRANSACTION;\n"
        f"IF EXISTS (SELECT 1 FROM {ledger} WHERE run_id = @run_id) THEN\n"
        "  ROLLBACK TRANSACTION;\n"
        "ELSE\n"
        "  IF staged_rows != @rows_extracted THEN\n"
        f"    SELECT ERROR(FORMAT('{VERIFICATION_MARKER} staging holds %d rows, %d were extracted',\n"
        "                        staged_rows, @rows_extracted));\n"
        "  END IF;\n"
        f"{guard_sql(ledger, replace)}"
        f"{bump_head}"
        f"{delete}"
        f"  INSERT INTO {dest} ({names}) SELECT {exprs} FROM {staging};\n"
        f"  INSERT INTO {ledger} ({ledger_cols}) VALUES ({ledger_vals});\n"
        "  COMMIT TRANSACTION;\n"
        "END IF;"
    )
