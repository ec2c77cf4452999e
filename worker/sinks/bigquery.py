"""The BigQuery sink: a ledger table, one expiring staging table per delivery, one commit script.

Rows reach the destination only through the commit script's transaction (DML), never by a load
job: loads go to the staging table, so the destination's per-table daily load quota is untouched
and a crash at any point leaves the destination as it was. Emulator differences are handled in
`emulator_compat`; SQL text lives in `bigquery_sql`, schema rules in `bigquery_schema`.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from worker import classify, errors, tracing
from worker.cdc.meta import CHANGE_COLUMNS
from worker.columns import Column
from worker.constants import CATALOG, HEADS_TABLE, LEDGER_TABLE
from worker.faults import crash_point, hold_commit
from worker.ledger import LedgerEntry
from worker.modes import mode_of
from worker.retry import RetryPolicy
from worker.settings import Settings
from worker.sinks import bigquery_client, emulator_compat
from worker.sinks import bigquery_schema as schema
from worker.sinks import bigquery_sql as sql
from worker.sinks.base import MergePlan, RunChunkStore, Staging, TableCommit
from worker.sub_windows import sub_window_prefix

log = logging.getLogger(__name__)

STAGING_TOKEN_BYTES = 4  # 8 hex characters: unique among the deliveries of one run
DECIMAL_TARGET_TYPES = (bigquery.DecimalTargetType.NUMERIC, bigquery.DecimalTargetType.BIGNUMERIC)
# The errors the commit script raises itself (`ERROR('<marker> why')`), by marker; classify.py reads them.
_SCRIPT_ERRORS: dict[str, type[errors.EtlError]] = {
    sql.VERIFICATION_MARKER: errors.VerificationError,
    sql.SUPERSEDED_MARKER: errors.SupersededError,
    sql.NULL_KEY_MARKER: errors.SourceDataError,
}


@dataclass(frozen=True)
class _Target:
    """Where and how the sink talks to BigQuery; shared by the sink and its staging tables."""

    client: bigquery.Client
    project: str
    dataset: str
    location: str | None
    retry: RetryPolicy
    api_retry: bigquery.retry.Retry
    emulator: bool
    job_timeout_s: float | None

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def table_sql(self, table: str) -> str:
        return sql.table_sql(self.project, self.dataset, table)

    def rows(self, query: str, params: Sequence[bigquery.ScalarQueryParameter] = ()) -> list[Any]:
        """Run one statement and return its rows. job_retry=None: the RetryPolicy retries instead."""
        config = bigquery.QueryJobConfig(query_parameters=list(params), labels=tracing.job_labels())
        job = self.client.query(
            query, job_config=config, location=self.location, retry=self.api_retry, job_retry=None
        )
        return list(job.result(retry=self.api_retry, job_retry=None))

    def start_or_resume(self, start: Callable[[str], Any], job_id: str) -> Any:
        """Insert a job under `job_id`; if it already exists (a retried insert whose first response
        was lost: 409 on real BigQuery), wait on that job instead of running the work twice."""
        try:
            return start(job_id)
        except gexc.Conflict:
            log.info("job %s already exists; resuming it", job_id)
            return self.client.get_job(job_id, location=self.location, retry=self.api_retry)


class _JobSteps:
    """One step (a part's load, a commit) run under deterministic job ids.

    A retry after an unknown outcome reuses the id, so it meets the first job; a retry after the
    job itself *failed* takes the next id, because BigQuery never reruns a failed job id.
    """

    def __init__(self, target: _Target, make_id: Callable[[int], str]) -> None:
        self._target = target
        self._make_id = make_id
        self._resubmit = 0

    def run(self, start: Callable[[str], Any]) -> Any:
        job = self._target.start_or_resume(start, self._make_id(self._resubmit))
        try:
            # A timeout escapes as transient with the job unfinished: the retry resumes it by id.
            job.result(retry=self._target.api_retry, timeout=self._target.job_timeout_s)
        except gexc.GoogleAPICallError:
            if job.error_result is not None:
                self._resubmit += 1
            raise
        return job


class BigQuerySink:
    """Implements `Sink` on one BigQuery dataset."""

    def __init__(
        self,
        client: bigquery.Client,
        *,
        project: str,
        dataset: str,
        retry: RetryPolicy,
        location: str | None = None,
        staging_expiration_s: int = 86_400,
        emulator: bool = False,
        api_retry: bigquery.retry.Retry | None = None,
        job_timeout_s: float | None = None,
    ) -> None:
        """`retry` retries whole steps (a load, the commit); `api_retry` single API calls (default:
        the library's, bounded on an emulator); `job_timeout_s` bounds each wait on a job."""
        self._target = _Target(
            client=client,
            project=project,
            dataset=sql.validate_dataset(dataset),
            location=location,
            retry=retry,
            api_retry=api_retry or emulator_compat.default_api_retry(emulator),
            emulator=emulator,
            job_timeout_s=job_timeout_s,
        )
        self._staging_expiration_s = staging_expiration_s
        self._ledger_ready = False

    @classmethod
    def from_settings(cls, settings: Settings, client: bigquery.Client) -> BigQuerySink:
        return cls(
            client,
            project=settings.gcp_project_id,
            dataset=settings.bigquery_dataset,
            location=settings.bigquery_location,
            staging_expiration_s=settings.etl_staging_expiration_s,
            retry=RetryPolicy(max_tries=settings.etl_max_retries, first_delay_s=settings.etl_retry_delay_s),
            emulator=bool(settings.bigquery_emulator_host),
            api_retry=bigquery_client.api_retry(settings.bigquery_emulator_host),
        )

    @property
    def target(self) -> _Target:
        """Where the sink talks to BigQuery (for worker/sinks/bigquery_chunks.py)."""
        return self._target

    @property
    def staging_expiration_s(self) -> int:
        return self._staging_expiration_s

    # --- Sink -----------------------------------------------------------------------------------
    def find_job(self, run_id: str) -> tuple[LedgerEntry, ...]:
        """Reads only: no ledger yet means no commit (a run that fails before staging, e.g. on a
        column name, leaves the dataset as it was)."""
        return self._target.retry.call(f"ledger lookup of run {run_id}", _read_job, self._target, run_id)

    def find_commit(self, run_id: str) -> LedgerEntry | None:
        """The first table's entry of `run_id` (a one-table job's only one), if it was applied."""
        return next(iter(self.find_job(run_id)), None)

    def commit_job(self, tables: Sequence[TableCommit], records: Sequence[LedgerEntry] = ()
                   ) -> tuple[LedgerEntry, ...]:
        return _commit_job(self._target, [(_own_staging(staging), entry) for staging, entry in tables],
                           records)

    def find_sub_windows(self, run_id: str) -> tuple[LedgerEntry, ...]:
        query = sql.find_sub_windows_sql(self._target.table_sql(LEDGER_TABLE))
        params = [bigquery.ScalarQueryParameter("prefix", "STRING", sub_window_prefix(run_id))]
        rows = self._target.retry.call(f"sub-window lookup of run {run_id}", _ledger_rows, self._target,
                                       query, params)
        return tuple(sql.entry_from_row(row) for row in rows)

    def check_destination(self, dest_table: str, columns: tuple[Column, ...]) -> None:
        sql.validate_table(dest_table)
        self._target.retry.call(f"checking {dest_table}", _check_destination, self._target, dest_table,
                                columns)

    def last_window_high(self, data_source_id: int, dest_table: str) -> str | None:
        """The window_high of the most recently committed windowed run of this source + table
        (the greatest, as windows of one table are committed in order), as text; None if none."""
        rows = self._table_ledger_rows("ledger window lookup", sql.last_window_high_sql,
                                       data_source_id, dest_table)
        return str(rows[0]["window_high"]) if rows else None

    def last_log_position(self, data_source_id: int, dest_table: str) -> str | None:
        rows = self._table_ledger_rows("ledger position lookup", sql.last_log_position_sql,
                                       data_source_id, dest_table)
        return str(rows[0]["window_high"]) if rows else None

    def last_commit(self, data_source_id: int, dest_table: str) -> LedgerEntry | None:
        rows = self._table_ledger_rows("ledger lookup of the last run", sql.last_commit_sql,
                                       data_source_id, dest_table)
        return sql.entry_from_row(rows[0]) if rows else None

    def _table_ledger_rows(self, what: str, query_of: Callable[[str], str], data_source_id: int,
                           dest_table: str) -> list[Any]:
        """One ledger query about a data source's destination table (@data_source_id, @dest_table)."""
        query = query_of(self._target.table_sql(LEDGER_TABLE))
        params = [
            bigquery.ScalarQueryParameter("data_source_id", "INT64", data_source_id),
            bigquery.ScalarQueryParameter("dest_table", "STRING", dest_table),
        ]
        rows: list[Any] = self._target.retry.call(what, _ledger_rows, self._target, query, params)
        return rows

    def recent_entries(self, limit: int, data_source_id: int | None = None) -> list[LedgerEntry]:
        """The newest committed runs first (`etl-worker runs`); none when there is no ledger yet."""
        return self._target.retry.call("ledger listing", _recent_entries, self._target, limit, data_source_id)

    def run_chunks(self, run_id: str, dest_table: str, columns: tuple[Column, ...], attempt: int
                   ) -> RunChunkStore:
        from worker.sinks.bigquery_chunks import RunChunks  # it builds on this module

        return RunChunks(self, run_id, dest_table, columns, attempt)

    def open_staging(
        self, dest_table: str, columns: tuple[Column, ...], run_id: str, attempt: int, load_type: str,
        merge: MergePlan | None = None,
    ) -> BigQueryStaging:
        apply = sql.Apply(mode_of(load_type).applies, merge)
        if not columns:
            raise errors.SourceSchemaError(f"no columns to load into {dest_table}")
        key_columns = _key_columns(columns, apply)
        sql.validate_table(dest_table)
        self.ensure_ledger()
        plan = self._target.retry.call(
            f"preparing {dest_table}", _prepare_destination, self._target, dest_table, columns,
            tuple(col.name for col in key_columns),
        )
        self._target.retry.call(f"heads row of {dest_table}", _ensure_head, self._target, dest_table)
        token = secrets.token_hex(STAGING_TOKEN_BYTES)
        staging = BigQueryStaging(
            self._target, dest_table=dest_table, columns=columns, plan=plan,
            run_id=run_id, attempt=attempt, load_type=load_type, token=token, apply=apply,
            key_columns=key_columns if merge is not None and merge.reconcile else (),
        )
        for table, table_columns in staging.tables():
            self._target.retry.call(
                f"creating {table}", _create_staging, self._target, table, table_columns,
                self._staging_expiration_s, run_id,
            )
        return staging

    def appending_staging(self, table_name: str, columns: tuple[Column, ...], dest_table: str, run_id: str,
                          attempt: int) -> BigQueryStaging:
        """Loads into an existing table (a chunked catalog run's own staging) under this sink's
        job ids and retries, as `run_id`'s delivery: never committed, never dropped by its user."""
        return BigQueryStaging(
            self._target, dest_table=dest_table, columns=columns, plan=schema.SchemaPlan((), {}),
            run_id=run_id, attempt=attempt, load_type=CATALOG, token=secrets.token_hex(STAGING_TOKEN_BYTES),
            table_name=table_name)

    # --- setup ----------------------------------------------------------------------------------
    def ensure_ledger(self) -> None:
        """Create the dataset and the ledger table if missing (once per sink; both idempotent)."""
        if not self._ledger_ready:
            self._target.retry.call("creating dataset and ledger", _create_dataset_and_ledger, self._target)
            self._ledger_ready = True


class BigQueryStaging:
    """Implements `Staging`: this delivery's staging table, its loads and its commit."""

    def __init__(
        self, target: _Target, *, dest_table: str, columns: tuple[Column, ...], plan: schema.SchemaPlan,
        run_id: str, attempt: int, load_type: str, token: str, apply: sql.Apply | None = None,
        key_columns: tuple[Column, ...] = (), table_name: str | None = None,
    ) -> None:
        self._target = target
        self._columns = columns
        self._plan = plan
        self.dest_table = dest_table
        self.run_id = run_id
        self.attempt = attempt
        self.load_type = load_type
        self.token = token
        self.table_name = table_name or sql.staging_table_name(run_id, attempt, token)
        # A cdc run stages changes: the columns plus their order, operation and kept columns.
        staged = (*columns, *CHANGE_COLUMNS) if (apply and apply.applies == "changes") else columns
        self._rows = _StagedTable(self.table_name, staged, "p")
        # A merge with reconcile stages every source key in a second table.
        self._keys = _StagedTable(f"{self.table_name}_keys", key_columns, "k") if key_columns else None
        applies = apply or sql.Apply(mode_of(load_type).applies)
        self._apply = dataclasses.replace(applies, keys_table=target.table_sql(self._keys.name)
                                          if self._keys else None)
        self.warnings = plan.warnings(dest_table)

    @property
    def parts_loaded(self) -> int:
        return self._rows.parts

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns


    @property
    def rows_loaded(self) -> int:
        return self._rows.rows

    def tables(self) -> list[tuple[str, tuple[Column, ...]]]:
        """The staging tables to create: the rows, and the keys of a reconciling merge."""
        staged = [self._rows] + ([self._keys] if self._keys else [])
        return [(table.name, table.columns) for table in staged]

    def load_part(self, path: Path) -> int:
        return self._load(self._rows, path)

    def load_keys_part(self, path: Path) -> int:
        if self._keys is None:
            raise ValueError(f"run {self.run_id} stages no keys (a merge with reconcile_deletes does)")
        return self._load(self._keys, path)

    def _load(self, table: _StagedTable, path: Path) -> int:
        part = table.parts
        make_id = partial(sql.load_job_id, self.run_id, self.attempt, self.token, part, step=table.step)
        steps = _JobSteps(self._target, make_id)
        started = time.monotonic()
        job = self._target.retry.call(
            f"load of part {part} of run {self.run_id}", steps.run, partial(self._start_load, table, path)
        )
        reported = int(job.output_rows or 0)
        rows = emulator_compat.load_output_rows(reported, table.rows, self._target.emulator)
        table.parts += 1
        table.rows += rows
        log.info(
            "run %s: part %d loaded into %s (%d rows, %.2fs)",
            self.run_id, part, table.name, rows, time.monotonic() - started,
        )
        return rows

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        """A job of this one table."""
        (in_force,) = _commit_job(self._target, [(self, entry)])
        return in_force

    def script_part(self, name: str | None, prefix: str, entry: LedgerEntry | None = None
                    ) -> sql.TableScript:
        """This table's part of its job's commit script (a cdc entry names the columns some change
        did not send)."""
        kept = tuple((entry.cdc or {}).get("kept_columns") or ()) if entry is not None else ()
        return sql.TableScript(
            dest=self._target.table_sql(self.dest_table), staging=self._target.table_sql(self.table_name),
            columns=self._columns, dest_types=self._plan.dest_types,
            apply=dataclasses.replace(self._apply, kept=kept), name=name, prefix=prefix)

    def duplicate_count(self, columns: tuple[str, ...]) -> int:
        query = sql.duplicate_count_sql(self._target.table_sql(self.table_name), columns)
        what = f"uniqueness of {columns} in run {self.run_id}"
        rows = self._target.retry.call(what, self._target.rows, query)
        return int(rows[0]["duplicates"])

    def drop(self) -> None:
        for table, _ in self.tables():
            self._target.retry.call(
                f"dropping {table}", self._target.client.delete_table,
                self._target.table_id(table), retry=self._target.api_retry, not_found_ok=True,
            )
            log.info("run %s: dropped %s", self.run_id, table)

    # --- steps ----------------------------------------------------------------------------------
    def _start_load(self, table: _StagedTable, path: Path, job_id: str) -> Any:
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True  # Parquet LIST -> REPEATED, not a record of `list`
        config = bigquery.LoadJobConfig(
            labels=tracing.job_labels(),
            schema=schema.schema_fields(table.columns, staging=True),
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
            parquet_options=options,
            # Parquet DECIMAL(76, 38) becomes BIGNUMERIC only when allowed here (the default is
            # NUMERIC alone); NUMERIC still wins for DECIMAL(38, 9).
            decimal_target_types=DECIMAL_TARGET_TYPES,
        )
        # No `size`: a resumable upload (multipart fails on the emulator; resumable works everywhere).
        with path.open("rb") as file:
            return self._target.client.load_table_from_file(
                file, self._target.table_id(table.name), job_id=job_id,
                job_config=config, location=self._target.location,
            )

    def check_entry(self, entry: LedgerEntry) -> None:
        expected = (self.run_id, self.token, self.dest_table, self.load_type)
        got = (entry.run_id, entry.staging_token, entry.dest_table, entry.load_type)
        if got != expected:
            raise ValueError(f"ledger entry {got} does not belong to staging {expected}")


@dataclass
class _StagedTable:
    """One staging table of a delivery and what has been loaded into it."""

    name: str
    columns: tuple[Column, ...]
    step: str  # job id step prefix: p (row parts), k (key parts)
    parts: int = 0
    rows: int = 0


def _key_columns(columns: tuple[Column, ...], apply: sql.Apply) -> tuple[Column, ...]:
    """The merge key's columns (refused unless the plan's names are loaded columns)."""
    if apply.applies not in ("merge", "changes"):
        return ()
    if apply.merge is None:
        raise errors.ConfigurationError("a merge run needs its key (MergePlan)")
    by_name = {col.name: col for col in columns}
    cursor = (apply.merge.cursor,) if apply.applies == "merge" else ()  # cdc: the staged change order
    missing = [name for name in (*apply.merge.key, *cursor) if name not in by_name]
    if missing:
        raise errors.ConfigurationError(f"merge columns {missing} are not among the loaded columns")
    return tuple(by_name[name] for name in apply.merge.key)


# --- module helpers (each one retried as a unit by the caller's RetryPolicy) ---------------------
def _read_job(target: _Target, run_id: str) -> tuple[LedgerEntry, ...]:
    query = sql.find_commit_sql(target.table_sql(LEDGER_TABLE))
    rows = _ledger_rows(target, query, [bigquery.ScalarQueryParameter("run_id", "STRING", run_id)])
    return tuple(sql.entry_from_row(row) for row in rows)


# --- the commit ----------------------------------------------------------------------------------
def _own_staging(staging: Staging) -> BigQueryStaging:
    if not isinstance(staging, BigQueryStaging):
        raise TypeError(f"a BigQuery job commits only its own staging tables, not {staging!r}")
    return staging


def _commit_job(target: _Target, tables: Sequence[tuple[BigQueryStaging, LedgerEntry]],
                records: Sequence[LedgerEntry] = ()) -> tuple[LedgerEntry, ...]:
    """Every table of the job in ONE script job (one transaction), under the first table's delivery
    token; then the ledger tells whether this delivery applied the run or found it applied."""
    first, _ = tables[0]
    for staging, entry in tables:
        staging.check_entry(entry)
    started = time.monotonic()
    steps = _JobSteps(target, partial(sql.commit_job_id, first.run_id, first.attempt, first.token))
    target.retry.call(f"commit of run {first.run_id}", _run_commit, target, steps, tables, records)
    in_force = target.retry.call(f"ledger lookup of run {first.run_id}", _read_job, target, first.run_id)
    if not in_force:
        raise errors.LoadError(f"commit of run {first.run_id} finished but the ledger has no entry")
    log.info(
        "run %s: %s into %s (%.2fs)", first.run_id,
        "committed" if in_force[0].staging_token == first.token
        else f"already committed by delivery {in_force[0].staging_token}",
        ", ".join(staging.dest_table for staging, _ in tables), time.monotonic() - started,
    )
    return in_force


def _run_commit(target: _Target, steps: _JobSteps, tables: Sequence[tuple[BigQueryStaging, LedgerEntry]],
                records: Sequence[LedgerEntry] = ()) -> None:
    count = len(tables)
    script = sql.job_script(
        ledger=target.table_sql(LEDGER_TABLE), heads=target.table_sql(HEADS_TABLE),
        tables=[staging.script_part(staging.dest_table if count > 1 else None, sql.job_prefix(index, count),
                                    entry) for index, (staging, entry) in enumerate(tables)],
        records=len(records),
    )
    params = sql.job_params([entry for _, entry in tables], records)
    query, params = emulator_compat.script_query(script, params, target.emulator)
    query = hold_commit(query)  # fault injection only (ETL_FAULT_INJECTION=1); else unchanged
    config = bigquery.QueryJobConfig(query_parameters=params, labels=tracing.job_labels())

    def start(job_id: str) -> Any:
        job = target.client.query(
            query, job_config=config, job_id=job_id, location=target.location,
            retry=target.api_retry, job_retry=None,
        )
        crash_point("commit_returned")
        return job

    try:
        steps.run(start)
    except gexc.GoogleAPICallError as exc:
        mapped = _commit_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _ledger_rows(target: _Target, query: str, params: Sequence[bigquery.ScalarQueryParameter]) -> list[Any]:
    """A ledger query's rows; none when there is no dataset or ledger yet (reads never create them)."""
    try:
        return target.rows(query, params)
    except gexc.NotFound:
        return []


def _recent_entries(target: _Target, limit: int, data_source_id: int | None) -> list[LedgerEntry]:
    query = sql.recent_entries_sql(target.table_sql(LEDGER_TABLE), data_source_id is not None)
    params = [bigquery.ScalarQueryParameter("limit", "INT64", limit)]
    if data_source_id is not None:
        params.append(bigquery.ScalarQueryParameter("data_source_id", "INT64", data_source_id))
    return [sql.entry_from_row(row) for row in _ledger_rows(target, query, params)]


def _ensure_head(target: _Target, dest_table: str) -> None:
    params = [bigquery.ScalarQueryParameter("dest_table", "STRING", dest_table)]
    target.rows(sql.ensure_head_sql(target.table_sql(HEADS_TABLE)), params)


def _create_dataset_and_ledger(target: _Target) -> None:
    dataset = bigquery.Dataset(f"{target.project}.{target.dataset}")
    if target.location:
        dataset.location = target.location
    target.client.create_dataset(dataset, exists_ok=True, retry=target.api_retry)
    ledger = bigquery.Table(target.table_id(LEDGER_TABLE), schema=sql.ledger_schema())
    ledger.description = "One row per applied ETL run, written in the run's commit transaction."
    existing = target.client.create_table(ledger, exists_ok=True, retry=target.api_retry)
    _upgrade_ledger(target, {field.name for field in existing.schema})
    heads = bigquery.Table(target.table_id(HEADS_TABLE), schema=sql.heads_schema())
    heads.description = "One row per destination, updated by every commit to serialise them."
    target.client.create_table(heads, exists_ok=True, retry=target.api_retry)


def _upgrade_ledger(target: _Target, present: set[str]) -> None:
    """A ledger made by an older version lacks newer columns: add them (nullable; old rows NULL)."""
    missing = tuple(
        Column(name, "ledger", pa.string(), bq_type)  # only the name and BigQuery type matter here
        for name, bq_type in sql.LEDGER_FIELDS if name not in present
    )
    if missing:
        _add_columns(target, LEDGER_TABLE, missing)


def _check_destination(target: _Target, dest_table: str, columns: tuple[Column, ...]) -> None:
    """Raise SchemaMismatchError if the destination exists and cannot take the columns (reads only)."""
    try:
        table = target.client.get_table(target.table_id(dest_table), retry=target.api_retry)
    except gexc.NotFound:
        return
    _schema_plan(target, table, columns)


def _schema_plan(target: _Target, table: bigquery.Table, columns: tuple[Column, ...]) -> schema.SchemaPlan:
    existing = schema.existing_columns(table.schema)
    if target.emulator:
        existing = emulator_compat.reported_columns(existing, columns)
    return schema.plan_schema(existing, columns)


def _prepare_destination(
    target: _Target, dest_table: str, columns: tuple[Column, ...], cluster_by: tuple[str, ...] = ()
) -> schema.SchemaPlan:
    """Create the destination when missing (clustered by a merge key, so BigQuery prunes the MERGE);
    add new columns; refuse incompatible types. An existing table is never re-clustered."""
    table_id = target.table_id(dest_table)
    try:
        table = target.client.get_table(table_id, retry=target.api_retry)
    except gexc.NotFound:
        created = bigquery.Table(table_id, schema=schema.schema_fields(columns, staging=False))
        created.clustering_fields = schema.clustering_fields(columns, cluster_by)
        table = target.client.create_table(created, exists_ok=True, retry=target.api_retry)
        log.info("created %s with %d columns", table_id, len(columns))
    plan = _schema_plan(target, table, columns)
    if plan.new_columns:
        _add_columns(target, dest_table, plan.new_columns)
    for warning in plan.warnings(dest_table):
        log.warning("%s", warning)
    return plan


def _add_columns(target: _Target, dest_table: str, columns: tuple[Column, ...]) -> None:
    for statement in emulator_compat.alter_statements(target.table_sql(dest_table), columns, target.emulator):
        target.rows(statement)
    if target.emulator:
        emulator_compat.sync_catalog_after_alter(
            target.client, target.table_id(dest_table), columns, target.api_retry
        )
    log.info("added columns %s to %s", [col.name for col in columns], dest_table)


def _create_staging(
    target: _Target, name: str, columns: tuple[Column, ...], expiration_s: int, run_id: str
) -> None:
    table = bigquery.Table(target.table_id(name), schema=schema.schema_fields(columns, staging=True))
    # Permanent tables cannot be created inside a transaction, so staging is a real table; the
    # expiry removes it if a crash skips drop().
    table.expires = datetime.now(UTC) + timedelta(seconds=expiration_s)
    table.description = f"ETL staging for run {run_id}; dropped after commit."
    target.client.create_table(table, exists_ok=True, retry=target.api_retry)
    log.info("run %s: created staging table %s", run_id, name)


def _commit_error(exc: gexc.GoogleAPICallError) -> errors.EtlError | None:
    """The commit script's failure as the worker should see it; None: let classify() decide."""
    return classify.commit_error(exc, _SCRIPT_ERRORS)
