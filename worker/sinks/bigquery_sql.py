"""SQL text, names and ledger rows for the BigQuery sink, as pure functions (no client, no I/O).

Every identifier is validated and quoted with backticks; every value travels as a query parameter.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.cloud import bigquery

from worker import errors
from worker.cdc import meta as cdc_meta
from worker.columns import STAGED_AS_STRING, Column
from worker.constants import MAX_JOB_TABLES, STAGING_PREFIX
from worker.ledger import LedgerEntry
from worker.modes import LOGGED, WINDOWED, Applies
from worker.sinks.base import MergePlan

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
# ... into SourceDataError: a merge key column holds NULL.
NULL_KEY_MARKER = "etl-null-key:"
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


def load_job_id(run_id: str, attempt: int, token: str, part: int, resubmit: int = 0, *,
                step: str = "p") -> str:
    """A part's load: step `p` for row parts, `k` for the key parts of a reconciling merge."""
    return job_id(run_id, attempt, token, f"{step}{part}", resubmit)


def commit_job_id(run_id: str, attempt: int, token: str, resubmit: int = 0) -> str:
    return job_id(run_id, attempt, token, "commit", resubmit)


# --- DDL ---------------------------------------------------------------------------------------
def column_ddl_type(column: Column) -> str:
    return f"ARRAY<{column.bq_type}>" if column.repeated else column.bq_type


def add_column_clause(column: Column) -> str:
    # IF NOT EXISTS: a retried ALTER (or a concurrent run adding the same column) is a no-op.
    clause = f"ADD COLUMN IF NOT EXISTS {quote_name(column.name)} {column_ddl_type(column)}"
    if column.description:
        clause += f" OPTIONS(description={string_literal(column.description)})"
    return clause


_STRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def string_literal(value: str) -> str:
    """A GoogleSQL string literal of any text (quotes, backslashes and line breaks escaped)."""
    return "'" + "".join(_STRING_ESCAPES.get(ch, ch) for ch in value) + "'"


def add_columns_sql(table: str, columns: Sequence[Column]) -> str:
    """One ALTER for all new columns: real BigQuery allows 5 metadata updates per table per 10 s."""
    return f"ALTER TABLE {table} " + ", ".join(add_column_clause(col) for col in columns)


# --- ledger queries ----------------------------------------------------------------------------
def find_commit_sql(ledger: str) -> str:
    """Every ledger row of @run_id: one per table of its job, in job order."""
    return f"SELECT * FROM {ledger} WHERE run_id = @run_id ORDER BY committed_at, IFNULL(table_index, 0)"


def find_sub_windows_sql(ledger: str) -> str:
    """Every committed sub-window of a run: the ledger rows whose run id starts with @prefix."""
    return f"SELECT * FROM {ledger} WHERE STARTS_WITH(run_id, @prefix) ORDER BY window_high_key"


def last_window_high_sql(ledger: str, modes: Sequence[str] = WINDOWED) -> str:
    """The window_high of the most recently committed transactional entry for the source + table.

    Runs of one source and table commit windows in order (each starts at the previous high), so the
    latest committed high is the greatest one; comparing texts as values is the caller's business.
    """
    return (
        f"SELECT window_high FROM {ledger} "
        "WHERE data_source_id = @data_source_id AND dest_table = @dest_table "
        f"AND load_type IN ({_modes_sql(modes)}) AND window_high IS NOT NULL "
        "ORDER BY window_high_key DESC, committed_at DESC LIMIT 1"
    )


def last_log_position_sql(ledger: str) -> str:
    """The end position of the newest committed cdc run of the source + table (its own chain)."""
    return last_window_high_sql(ledger, LOGGED)


def _modes_sql(modes: Sequence[str] = WINDOWED) -> str:
    """Modes as SQL literals (constants of worker.modes, never request input)."""
    return ", ".join(f"'{name}'" for name in modes)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# Ledger columns that hold a structure (a Mapping or a tuple field) store it as JSON text; a row
# written before the column existed reads NULL, which becomes the field's default.
_STRUCTURED_KINDS: Mapping[str, Callable[[Any], Any]] = {"Mapping[": dict, "tuple[": tuple}


def _structured_codec(f: dataclasses.Field[Any], build: Callable[[Any], Any]
                      ) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    def encode(value: Any) -> str | None:
        if value is None:
            return None
        return _json_text(dict(value) if isinstance(value, Mapping) else list(value))

    def decode(text: Any) -> Any:
        if text is None:
            return default
        return build(json.loads(text) if isinstance(text, str) else text)

    return encode, decode


_LEDGER_CODECS: Mapping[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    f.name: _structured_codec(f, build)
    for f in dataclasses.fields(LedgerEntry)
    for kind, build in _STRUCTURED_KINDS.items()
    if str(f.type).startswith(kind)
}


def _encoded(name: str, value: Any) -> Any:
    codec = _LEDGER_CODECS.get(name)
    return value if codec is None else codec[0](value)


def _decoded(name: str, value: Any) -> Any:
    codec = _LEDGER_CODECS.get(name)
    return value if codec is None else codec[1](value)


def last_commit_sql(ledger: str) -> str:
    """The newest ledger entry of one @data_source_id and @dest_table."""
    return (f"SELECT * FROM {ledger} WHERE data_source_id = @data_source_id AND dest_table = @dest_table "
            "ORDER BY committed_at DESC, run_id LIMIT 1")


def duplicate_count_sql(staging: str, columns: Sequence[str]) -> str:
    """Rows beyond the first of each distinct value of `columns` (a NULL is a value too)."""
    values = ", ".join(quote_name(name) for name in columns)
    return f"SELECT COUNT(*) - COUNT(DISTINCT TO_JSON_STRING(STRUCT({values}))) AS duplicates FROM {staging}"


def recent_entries_sql(ledger: str, by_data_source: bool) -> str:
    """The newest ledger entries first (@limit of them), optionally of one @data_source_id."""
    where = "WHERE data_source_id = @data_source_id " if by_data_source else ""
    return f"SELECT * FROM {ledger} {where}ORDER BY committed_at DESC, run_id LIMIT @limit"


def ledger_params(entry: LedgerEntry, prefix: str = "") -> list[bigquery.ScalarQueryParameter]:
    """One query parameter per ledger column, named after it (with the table's prefix in a job)."""
    return [
        bigquery.ScalarQueryParameter(f"{prefix}{name}", bq_type, _encoded(name, getattr(entry, name)))
        for name, bq_type in LEDGER_FIELDS
    ]


def job_params(entries: Sequence[LedgerEntry], records: Sequence[LedgerEntry] = ()
               ) -> list[bigquery.ScalarQueryParameter]:
    """The parameters of `job_script`: every table's ledger parameters, under its prefix, then
    every further record's."""
    return [param for index, entry in enumerate(entries)
            for param in ledger_params(entry, job_prefix(index, len(entries)))] + [
        param for index, entry in enumerate(records) for param in ledger_params(entry, record_prefix(index))]


def record_prefix(index: int) -> str:
    """Parameter prefix of a job script's further ledger row (`job_script(records=...)`)."""
    return f"r{index}_"


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


def guard_sql(ledger: str, replace: bool, prefix: str = "", table_name: str | None = None,
              chain: Sequence[str] = WINDOWED) -> str:
    """Refuse (inside the transaction) a run that a concurrent one has overtaken.

    Windowed modes: a committed window of this source and table overlapping [low, high).
    Catalog: a committed snapshot of this table taken later than ours (older never wins).
    `prefix`: of the table's parameters in a job's script; `table_name`: named in the message;
    `chain`: the modes whose windows this one's must not overlap (cdc ranges are their own chain).
    """
    p, this = prefix, f"table {table_name}" if table_name else "this table"
    if replace:
        condition = (
            f"SELECT 1 FROM {ledger} WHERE dest_table = @{p}dest_table AND load_type = 'catalog' "
            f"AND snapshot_at > @{p}snapshot_at"
        )
        reason = f"a newer snapshot of {this} is already committed"
    else:
        condition = (
            f"SELECT 1 FROM {ledger} WHERE dest_table = @{p}dest_table "
            f"AND data_source_id = @{p}data_source_id AND load_type IN ({_modes_sql(chain)}) "
            f"AND (@{p}window_low_key IS NULL OR window_high_key > @{p}window_low_key) "
            f"AND (window_low_key IS NULL OR window_low_key < @{p}window_high_key)"
        )
        reason = f"an overlapping window of {this} is already committed"
    return _raise_if(f"EXISTS ({condition})", f"'{SUPERSEDED_MARKER} {reason}'")


def _raise_if(condition: str, message_sql: str) -> str:
    return f"  IF {condition} THEN\n    SELECT ERROR({message_sql});\n  END IF;\n"


# Ledger values taken from BigQuery's clock as the transaction runs, not from the worker's before
# it: when the run was committed, and how long it took up to then ({p}: the table's prefix). A
# job's entries are inserted by one statement, so they share that moment.
COMMIT_TIME_VALUES: Mapping[str, str] = {
    "committed_at": "CURRENT_TIMESTAMP()",
    "duration_seconds": "TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), @{p}started_at, MICROSECOND) / 1000000",
}


@dataclass(frozen=True)
class Apply:
    """How the commit applies the staged rows: its mode and, for merge, the plan and keys table."""

    applies: Applies
    merge: MergePlan | None = None
    keys_table: str | None = None  # staged source keys (merge with reconcile)
    kept: tuple[str, ...] = ()  # cdc: columns some staged change did not send (keep the last sent)


@dataclass(frozen=True)
class TableScript:
    """One table's part of a commit script: where its rows are staged and how they apply."""

    dest: str
    staging: str
    columns: Sequence[Column]
    dest_types: Mapping[str, str]
    apply: Apply
    name: str | None = None  # the destination, named in the script's errors (a job of several)
    prefix: str = ""  # of its parameters and variables in a job's script (`job_prefix`)


def job_prefix(index: int, tables: int) -> str:
    """Parameter and variable prefix of a job's table: none in a one-table job (its script and
    parameters are the single-table ones), `t0_`, `t1_`, ... in a job of several."""
    return "" if tables == 1 else f"t{index}_"


def commit_script(
    *, dest: str, staging: str, ledger: str, columns: Sequence[Column],
    dest_types: Mapping[str, str], apply: Apply, heads: str | None = None,
) -> str:
    """The script of a one-table job (see `job_script`). Parameters: @run_id, @rows_extracted and
    one per ledger column (see `ledger_params`)."""
    return job_script(ledger=ledger, heads=heads, tables=[TableScript(dest, staging, columns, dest_types,
                                                                      apply)])


def job_script(*, ledger: str, tables: Sequence[TableScript], heads: str | None = None,
               records: int = 0) -> str:
    """One script, ONE transaction: verify every table's staged counts, then apply every table and
    record each one's ledger row, or do nothing (the run is already applied), or fail as a whole.

    The count checks sit inside the ELSE branch so that a delivery that finds the run already
    applied returns the ledger entries in force rather than failing on its own staging tables; an
    error raised for any table rolls the whole transaction back. Parameters: one per ledger column
    and table, prefixed with the table's `prefix` (see `job_params`). `records`: further ledger rows
    inserted with the tables' (a sub-windowed run's own entry with its last sub-window), their
    parameters prefixed `record_prefix(i)`.
    """
    if not 1 <= len(tables) <= MAX_JOB_TABLES:
        raise errors.ConfigurationError(
            f"a job's commit applies 1 to {MAX_JOB_TABLES} tables in one BigQuery transaction, not "
            f"{len(tables)}")
    return (
        "".join(_declarations(table) for table in tables)
        + "BEGIN TRANSACTION;\n"
        f"IF EXISTS (SELECT 1 FROM {ledger} WHERE run_id = @{tables[0].prefix}run_id) THEN\n"
        "  ROLLBACK TRANSACTION;\n"
        "ELSE\n"
        + "".join(_table_sql(table, ledger, heads) for table in tables)
        + _ledger_insert(ledger, [table.prefix for table in tables]
                         + [record_prefix(index) for index in range(records)])
        + "  COMMIT TRANSACTION;\n"
        "END IF;"
    )


def _declarations(table: TableScript) -> str:
    p, keys = table.prefix, table.apply.keys_table
    return (f"DECLARE {p}staged_rows INT64 DEFAULT (SELECT COUNT(*) FROM {table.staging});\n"
            + (f"DECLARE {p}staged_keys INT64 DEFAULT (SELECT COUNT(*) FROM {keys});\n" if keys else ""))


def _table_sql(table: TableScript, ledger: str, heads: str | None) -> str:
    """One table's checks, heads bump and apply, inside the job's transaction."""
    p, of = table.prefix, f" of {table.name}" if table.name else ""
    bump_head = (
        f"  UPDATE {heads} SET version = version + 1, last_run_id = @{p}run_id, "
        f"updated_at = @{p}committed_at WHERE dest_table = @{p}dest_table;\n"
    ) if heads else ""
    return (
        _raise_if(f"{p}staged_rows != @{p}rows_extracted", f"FORMAT('{VERIFICATION_MARKER} staging{of} "
                  f"holds %d rows, %d were extracted', {p}staged_rows, @{p}rows_extracted)")
        + (_raise_if(f"{p}staged_keys != @{p}keys_extracted", f"FORMAT('{VERIFICATION_MARKER} staging{of} "
                     f"holds %d keys, %d were read', {p}staged_keys, @{p}keys_extracted)")
           if table.apply.keys_table else "")
        + guard_sql(ledger, table.apply.applies == "replace", p, table.name,
                    LOGGED if table.apply.applies == "changes" else WINDOWED)
        + bump_head
        + _apply_sql(table.dest, table.staging, table.columns, table.dest_types, table.apply)
    )


def _ledger_insert(ledger: str, prefixes: Sequence[str]) -> str:
    """Every table's ledger row, in one statement (one CURRENT_TIMESTAMP for the job)."""
    columns = ", ".join(name for name, _ in LEDGER_FIELDS)
    rows = ", ".join(
        "(" + ", ".join(COMMIT_TIME_VALUES[name].format(p=p) if name in COMMIT_TIME_VALUES else f"@{p}{name}"
                        for name, _ in LEDGER_FIELDS) + ")"
        for p in prefixes)
    return f"  INSERT INTO {ledger} ({columns}) VALUES {rows};\n"


def _apply_sql(dest: str, staging: str, columns: Sequence[Column], dest_types: Mapping[str, str],
               apply: Apply) -> str:
    names = [quote_name(col.name) for col in columns]
    exprs = [select_expr(col, dest_types.get(col.name, col.bq_type)) for col in columns]
    if apply.applies == "changes":
        assert apply.merge is not None, "a cdc commit needs its key (MergePlan)"
        return changes_sql(dest, staging, columns, dict(zip(names, exprs, strict=True)), apply.merge,
                           apply.kept)
    if apply.applies == "merge":
        assert apply.merge is not None, "a merge commit needs its MergePlan"
        named = ", ".join(f"{expr} AS {name}" for expr, name in zip(exprs, names, strict=True))
        return merge_sql(dest, staging, columns, named, apply.merge, apply.keys_table)
    delete = f"  DELETE FROM {dest} WHERE TRUE;\n" if apply.applies == "replace" else ""
    return f"{delete}  INSERT INTO {dest} ({', '.join(names)}) SELECT {', '.join(exprs)} FROM {staging};\n"


def merge_sql(dest: str, staging: str, columns: Sequence[Column], exprs: str, plan: MergePlan,
              keys_table: str | None) -> str:
    """The staged rows merged into the destination by key, then (reconcile) the keys gone deleted.
    `exprs`: each staged column as the destination takes it, named after the column.

    Of several staged versions of one key the newest cursor wins; a tie goes to the version whose
    JSON text sorts last (arbitrary, but every delivery picks the same). A version replaces the
    destination's row only if its cursor is not older, so a window applied late never undoes a
    newer change. A NULL key is refused: it would match nothing and be inserted again every run.
    """
    key = [quote_name(name) for name in plan.key]
    cursor = quote_name(plan.cursor)
    by_name = {col.name: col for col in columns}
    deleted = _soft_deleted(by_name[plan.soft_delete]) if plan.soft_delete else "FALSE"
    newer = f"(d.{cursor} IS NULL OR s.{cursor} >= d.{cursor})"
    latest = (
        f"SELECT {exprs} FROM {staging} AS s WHERE TRUE QUALIFY ROW_NUMBER() OVER ("
        f"PARTITION BY {', '.join(f's.{k}' for k in key)} "
        f"ORDER BY s.{cursor} DESC, TO_JSON_STRING(s) DESC) = 1"
    )
    updates = ", ".join(f"{quote_name(c.name)} = s.{quote_name(c.name)}" for c in columns
                        if c.name not in plan.key)
    names = ", ".join(quote_name(col.name) for col in columns)
    values = ", ".join(f"s.{quote_name(col.name)}" for col in columns)
    null_key = " OR ".join(f"{k} IS NULL" for k in key)
    statements = [
        _raise_if(f"EXISTS (SELECT 1 FROM {staging} WHERE {null_key})",
                  f"'{NULL_KEY_MARKER} a primary key column ({', '.join(plan.key)}) holds NULL'"),
        f"  MERGE {dest} AS d USING ({latest}) AS s\n"
        f"  ON {' AND '.join(f'd.{k} = s.{k}' for k in key)}\n"
        f"  WHEN MATCHED AND {newer} AND {deleted} THEN DELETE\n"
        + (f"  WHEN MATCHED AND {newer} THEN UPDATE SET {updates}\n" if updates else "")
        + f"  WHEN NOT MATCHED AND NOT {deleted} THEN INSERT ({names}) VALUES ({values});\n",
    ]
    if keys_table:
        matched = " AND ".join(f"k.{k} = d.{k}" for k in key)
        statements.append(f"  DELETE FROM {dest} AS d WHERE NOT EXISTS "
                          f"(SELECT 1 FROM {keys_table} AS k WHERE {matched});\n")
    return "".join(statements)


def _soft_deleted(column: Column) -> str:
    """A staged row marked deleted: a boolean that is true, any other value that is not NULL."""
    name = f"s.{quote_name(column.name)}"
    return f"IFNULL({name}, FALSE)" if column.bq_type == "BOOL" else f"{name} IS NOT NULL"


def changes_sql(dest: str, staging: str, columns: Sequence[Column], exprs: Mapping[str, str],
                plan: MergePlan, kept: Sequence[str] = ()) -> str:
    """A cdc run's staged changes applied by key: the last change per key wins (`_etl_seq`).

    A TRUNCATE (a staged `T`), or a first run (`empty_first`), empties the destination; only the
    changes after the last truncate then apply. `kept`: columns some change did not send (an
    unchanged TOASTed value, a column its relation did not have yet; listed in its
    `_etl_unchanged`): such a column takes the value of the key's last change that did send one
    (found by a window MAX of its sequence number, then joined: no correlated subquery), else
    keeps the destination's. `exprs`: each staged column (quoted name) as the destination takes it.
    """
    seq, op = quote_name(cdc_meta.SEQ), quote_name(cdc_meta.OP)
    key = [quote_name(name) for name in plan.key]
    partition = f"PARTITION BY {', '.join(key)}"
    live = f"{op} != 'T' AND {seq} > (SELECT IFNULL(MAX({seq}), 0) FROM {staging} WHERE {op} = 'T')"
    sources = "".join(f", MAX(IF({_sent_test(name)}, {seq}, NULL)) OVER ({partition}) AS {_source_of(name)}"
                      for name in kept)
    latest = (f"SELECT *{sources} FROM {staging} WHERE {live} QUALIFY ROW_NUMBER() OVER ({partition} "
              f"ORDER BY {seq} DESC) = 1")
    selected, joins = [f"l.{op} AS {op}"], list[str]()
    for col in columns:
        name = quote_name(col.name)
        if col.name not in kept:
            selected.append(f"{_qualified(exprs[name], name, 'l')} AS {name}")
            continue
        alias = f"k{len(joins)}"
        joins.append(f" LEFT JOIN {staging} AS {alias} ON {alias}.{seq} = l.{_source_of(col.name)}")
        selected += [f"{_qualified(exprs[name], name, alias)} AS {name}",
                     f"{alias}.{seq} IS NOT NULL AS {_sent(col.name)}"]
    source = f"SELECT {', '.join(selected)} FROM ({latest}) AS l{''.join(joins)}"
    others = [col for col in columns if col.name not in plan.key]

    def update(col: Column) -> str:
        name = quote_name(col.name)
        if col.name in kept:
            return f"{name} = IF(s.{_sent(col.name)}, s.{name}, d.{name})"
        return f"{name} = s.{name}"

    updates = ", ".join(update(col) for col in others)
    names = ", ".join(quote_name(col.name) for col in columns)
    values = ", ".join(f"s.{quote_name(col.name)}" for col in columns)
    null_key = " OR ".join(f"{k} IS NULL" for k in key)
    empty = "TRUE" if plan.empty_first else f"EXISTS (SELECT 1 FROM {staging} WHERE {op} = 'T')"
    return (
        _raise_if(f"EXISTS (SELECT 1 FROM {staging} WHERE {op} != 'T' AND ({null_key}))",
                  f"'{NULL_KEY_MARKER} a primary key column ({', '.join(plan.key)}) holds NULL'")
        + f"  IF {empty} THEN\n    DELETE FROM {dest} WHERE TRUE;\n  END IF;\n"
        + f"  MERGE {dest} AS d USING ({source}) AS s\n"
        f"  ON {' AND '.join(f'd.{k} = s.{k}' for k in key)}\n"
        f"  WHEN MATCHED AND s.{op} = 'D' THEN DELETE\n"
        + (f"  WHEN MATCHED THEN UPDATE SET {updates}\n" if updates else "")
        + f"  WHEN NOT MATCHED AND s.{op} != 'D' THEN INSERT ({names}) VALUES ({values});\n"
    )


def _sent_test(name: str) -> str:
    """A staged change sent this column (it is not listed in its `_etl_unchanged`)."""
    listed = string_literal(f",{name},")
    return f"STRPOS(IFNULL({quote_name(cdc_meta.UNCHANGED)}, ''), {listed}) = 0"


def _source_of(name: str) -> str:
    return quote_name(f"_etl_src_{name}"[:300])


def _sent(name: str) -> str:
    return quote_name(f"_etl_sent_{name}"[:300])


def _qualified(expr: str, quoted: str, alias: str) -> str:
    """`expr` (of the one staged column `quoted`, see `select_expr`) read from `alias`."""
    return expr.replace(quoted, f"{alias}.{quoted}")
