"""Versioned message models: the request Django publishes and the events the worker publishes.

These pydantic models are the source of truth; `schemas/*.json` is generated from them
(`make schemas`) and a test fails when the two drift apart.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from worker import constants as c
from worker.errors import MessageDecodeError

SCHEMA_VERSION: Literal[1] = 1
MAX_IDENTIFIER_CHARS = 128
MAX_SELECTED_COLUMNS = 10_000
MAX_KEY_COLUMNS = 16
MAX_CONTEXT_BYTES = 4096
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# BigQuery table names: letters, digits, underscores (we do not accept the other Unicode classes).
_BQ_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
# Ways a request may give the source password: plaintext, or a reference resolved on the worker.
PASSWORD_FIELDS = ("password", "password_env", "password_file", "password_secret")


def _source_identifier(value: str) -> str:
    """A source identifier is quoted by SQLAlchemy, never pasted; still refuse what no database allows."""
    if not value or len(value) > MAX_IDENTIFIER_CHARS:
        raise ValueError(f"identifier must have 1..{MAX_IDENTIFIER_CHARS} characters")
    if _CONTROL_CHARS.search(value):
        raise ValueError("identifier must not contain control characters")
    return value


def _bq_table_name(value: str) -> str:
    if not _BQ_TABLE.match(value):
        raise ValueError("dest_table_name must match [A-Za-z_][A-Za-z0-9_]* (at most 1024 characters)")
    if value.startswith("_etl_"):
        raise ValueError("dest_table_name must not start with _etl_ (reserved for the worker)")
    return value


# The validators above give the errors; the schema says the same for publishers that validate first.
SourceIdentifier = Annotated[str, AfterValidator(_source_identifier), Field(json_schema_extra={
    "minLength": 1, "maxLength": MAX_IDENTIFIER_CHARS, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"})]
DestTableName = Annotated[str, AfterValidator(_bq_table_name), Field(json_schema_extra={
    "pattern": "^(?!_etl_)[A-Za-z_][A-Za-z0-9_]{0,1023}$"})]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=1_000_000)


class _Request(_Frozen):
    # Strict: JSON `true` is not port 1 and "7" is not data source 7; Django sends real types.
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=1_000_000, strict=True)


class ConnectionParams(_Request):
    """How to reach the source database. The password is a secret: never logged, never published."""

    # At most one way to give the password, as the schema says it to publishers.
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=1_000_000, strict=True,
                              json_schema_extra={"not": {"anyOf": [
                                  {"required": list(pair)}
                                  for pair in itertools.combinations(PASSWORD_FIELDS, 2)]}})

    host: str | None = Field(None, max_length=255, description="Host name or IP (not for sqlite).")
    port: int | None = Field(None, ge=1, le=65535, description="TCP port (not for sqlite).")
    database: str = Field(
        ..., min_length=1, max_length=4096, description="Database name (sqlite: a file path)."
    )
    username: str | None = Field(None, max_length=255, description="Database user.")
    password: SecretStr | None = Field(
        None, max_length=4096, description="Plaintext password (local use; prefer a reference below)."
    )
    password_env: str | None = Field(
        None, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable of the worker that holds the password.",
    )
    password_file: str | None = Field(
        None, min_length=1, max_length=4096,
        description="Path of a file on the worker holding the password, e.g. /run/secrets/NAME.",
    )
    password_secret: str | None = Field(
        None, max_length=1024, pattern=r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$",
        description="Secret Manager secret (projects/P/secrets/S[/versions/V]; default version: latest).",
    )

    @model_validator(mode="after")
    def _one_password(self) -> ConnectionParams:
        given = [name for name in PASSWORD_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(PASSWORD_FIELDS)}; got {', '.join(given)}")
        return self


RuleName = Literal[
    "min_rows", "max_null_fraction", "unique", "max_row_count_change", "max_cursor_age_seconds"]


class QualityRule(_Request):
    """One data-quality rule (docs/quality.md). `value` is the bound: the least rows; the greatest NULL
    fraction (0..1); the greatest relative change of the row count against the previous committed
    run of the table (0.5: ±50 %); the greatest age in seconds of the newest cursor value."""

    rule: RuleName
    value: float = Field(0, ge=0, description="The bound (unused by unique).")
    column: SourceIdentifier | None = Field(None, description="max_null_fraction: the source column.")
    columns: list[SourceIdentifier] | None = Field(
        None, min_length=1, max_length=MAX_KEY_COLUMNS, description="unique: the source columns.")
    on_violation: Literal["warn", "fail"] = Field(
        "fail", description="warn: commit and report; fail: commit nothing (a permanent run.failed).")

    @field_validator("value", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _needs(self) -> QualityRule:
        if self.rule == "max_null_fraction" and (self.column is None or self.value > 1):
            raise ValueError("max_null_fraction needs a column and a value between 0 and 1")
        if self.rule == "unique" and not self.columns:
            raise ValueError("unique needs columns")
        if (self.column is not None and self.rule != "max_null_fraction") or (
                self.columns is not None and self.rule != "unique"):
            raise ValueError(f"{self.rule} takes no column(s)")
        return self


def _table_rules() -> list[dict[str, Any]]:
    """A table's cross-field rules (the model validator's) as JSON Schema, for publishers that
    validate first: the windowed modes need their cursor; the merge fields are merge's alone."""
    merge_only: dict[str, Any] = {"soft_delete_column": False, "reconcile_deletes": {"const": False}}
    return [
        {"if": {"required": ["load_type"], "properties": {"load_type": {"not": {"enum": [c.MERGE, c.CDC]}}}},
         "then": {"properties": {"primary_key": False}}},
        {"if": {"required": ["load_type"], "properties": {"load_type": {"not": {"const": c.CDC}}}},
         "then": {"properties": {"cdc_slot": False, "cdc_publication": False, "cdc_server_id": False,
                                 "cdc_resnapshot": {"const": False}}}},
        {"if": {"required": ["load_type"], "properties": {"load_type": {"enum": [c.TRANSACTIONAL, c.MERGE]}}},
         "then": {"required": ["timestamp_column"], "properties": {"timestamp_column": {"type": "string"}}}},
        {"if": {"required": ["load_type"], "properties": {"load_type": {"not": {"const": c.MERGE}}}},
         "then": {"properties": merge_only}},
    ]


def _table_schema(schema: dict[str, Any]) -> None:
    schema["allOf"] = _table_rules()


LoadType = Literal["catalog", "transactional", "merge", "cdc"]
_SOURCE_TABLE_DOC = "Source table (or view) to read."
_DEST_TABLE_DOC = "BigQuery destination table, in BIGQUERY_DATASET."
_LOAD_TYPE_DOC = ("catalog: replace the table; transactional: append a window of the cursor; "
                  "merge: upsert a window of the cursor by primary key; cdc: apply the change log by "
                  "primary key (PostgreSQL, MySQL/MariaDB; docs/modes.md, docs/cdc.md).")


class _TableFields(_Request):
    """The fields of one table: at the top level of a one-table request, or in each `tables` entry
    of a job. The three identity fields are optional here (a job leaves them out at the top level);
    `TableSpec` requires them."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=1_000_000, strict=True,
                              json_schema_extra=_table_schema)

    source_table_name: SourceIdentifier | None = Field(None, description=_SOURCE_TABLE_DOC)
    dest_table_name: DestTableName | None = Field(None, description=_DEST_TABLE_DOC)
    load_type: LoadType | None = Field(None, description=_LOAD_TYPE_DOC)
    timestamp_column: SourceIdentifier | None = Field(
        None, description="Cursor column for transactional and merge loads (timestamp, date or integer)."
    )
    selected_columns: list[SourceIdentifier] | None = Field(
        None, max_length=MAX_SELECTED_COLUMNS, description="Columns to load, in order; null: all.",
        json_schema_extra={"uniqueItems": True},
    )
    last_sync_value: str | None = Field(
        None,
        max_length=64,
        description="Inclusive start of the next window: the `watermark` of the last run.completed.",
    )
    historical_start_date: str | None = Field(
        None, max_length=64, description="Inclusive start of the first transactional window."
    )
    primary_key: list[SourceIdentifier] | None = Field(
        None, min_length=1, max_length=MAX_KEY_COLUMNS, json_schema_extra={"uniqueItems": True},
        description="merge, cdc: the columns identifying a row (source names); default: the table's "
        "primary key.",
    )
    cdc_slot: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="cdc: the PostgreSQL replication slot; "
        "default: etl_<data_source_id>_<dest_table_name> (docs/cdc.md).")
    cdc_publication: str | None = Field(
        None, pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="cdc: the PostgreSQL publication; default: "
        "the slot's default name.")
    cdc_server_id: int | None = Field(
        None, ge=1, le=2**32 - 1, description="cdc: the replica server_id the worker reads a MySQL/MariaDB "
        "binlog as, unique among the server's replicas; default: derived from data_source_id and "
        "dest_table_name, in [1000000000, 4294967295) (docs/cdc.md).")
    cdc_resnapshot: bool = Field(
        False, description="cdc: load the table again from a fresh snapshot, replacing the destination, "
        "whatever the ledger's position (e.g. after the binlog was purged past it); send it once.")
    soft_delete_column: SourceIdentifier | None = Field(
        None, description="merge: rows whose value here is non-NULL (and not false, for a boolean) are "
        "deleted from BigQuery.",
    )
    reconcile_deletes: bool = Field(
        False, description="merge: also read every primary key of the source table (same snapshot) and "
        "delete the BigQuery rows whose key is gone (hard deletes).",
    )
    column_names: dict[SourceIdentifier, str] | None = Field(
        None, max_length=MAX_SELECTED_COLUMNS,
        description="BigQuery column name for a source column, overriding the naming rule "
        "(docs/names.md), e.g. to settle two source columns that would share one name.",
    )
    quality_rules: list[QualityRule] = Field(
        default_factory=list, max_length=100,
        description="Data-quality rules checked before the commit (docs/quality.md).",
    )

    @field_validator("last_sync_value", "historical_start_date", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("selected_columns", "primary_key")
    @classmethod
    def _unique_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat a column")
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> _TableFields:
        """What the load mode needs, and the columns selected_columns must then include."""
        if self.load_type is None:  # a job's top level: each table is checked on its own
            return self
        windowed = self.load_type in (c.TRANSACTIONAL, c.MERGE)
        if windowed and not self.timestamp_column:
            raise ValueError(f"{self.load_type} loads need timestamp_column")
        merge_only = {"soft_delete_column": self.soft_delete_column,
                      "reconcile_deletes": self.reconcile_deletes or None}
        misplaced = [name for name, value in merge_only.items() if value is not None]
        if misplaced and self.load_type != c.MERGE:
            raise ValueError(f"{', '.join(misplaced)} only apply to merge loads")
        if self.primary_key is not None and self.load_type not in (c.MERGE, c.CDC):
            raise ValueError("primary_key only applies to merge and cdc loads")
        cdc_only = [name for name in ("cdc_slot", "cdc_publication", "cdc_server_id")
                    if getattr(self, name) is not None] + (["cdc_resnapshot"] if self.cdc_resnapshot else [])
        if cdc_only and self.load_type != c.CDC:
            raise ValueError(f"{', '.join(cdc_only)} only apply to cdc loads")
        if any(rule.rule == "max_cursor_age_seconds" for rule in self.quality_rules) and not windowed:
            raise ValueError("max_cursor_age_seconds needs a timestamp_column (transactional or merge)")
        if self.selected_columns:
            self._check_selected(windowed)
        return self

    def _check_selected(self, windowed: bool) -> None:
        assert self.selected_columns is not None
        needed = [("timestamp_column", self.timestamp_column if windowed else None),
                  *(("primary_key", key) for key in self.primary_key or ()),
                  ("soft_delete_column", self.soft_delete_column)]
        needed += [(f"quality rule {rule.rule}", name) for rule in self.quality_rules
                   for name in [rule.column, *(rule.columns or ())] if name]
        chosen = set(self.selected_columns)
        missing = [f"{role} {name!r}" for role, name in needed if name and name not in chosen]
        if missing:
            raise ValueError(f"selected_columns must include {', '.join(missing)}")


class TableSpec(_TableFields):
    """One table of a job: the one-table request's table fields, under the same names."""

    source_table_name: SourceIdentifier = Field(..., description=_SOURCE_TABLE_DOC)
    dest_table_name: DestTableName = Field(..., description=_DEST_TABLE_DOC)
    load_type: LoadType = Field(..., description=_LOAD_TYPE_DOC)


TABLE_FIELDS = tuple(TableSpec.model_fields)  # the fields each table of a job has
_IDENTITY_FIELDS = ("source_table_name", "dest_table_name", "load_type")


def _top_level_default(name: str) -> Any:
    """A table field's value when a request leaves it out at the top level."""
    return _TableFields.model_fields[name].get_default(call_default_factory=True)


def _one_form_schema(schema: dict[str, Any]) -> None:
    """In the JSON Schema: a request is one table (its fields at the top level) or a job (`tables`,
    the table fields left out at the top level or at their defaults), never both."""
    job = {"required": ["tables"], "properties": {
        "tables": {"type": "array"},
        **{name: {"const": _top_level_default(name)} for name in TABLE_FIELDS}}}
    one_table = {"required": list(_IDENTITY_FIELDS), "properties": {
        "tables": {"const": None}, **{name: {"type": "string"} for name in _IDENTITY_FIELDS}}}
    schema["oneOf"] = [one_table, job]


def _request_schema(schema: dict[str, Any]) -> None:
    """One form or the other; a one-table request's table rules; a server needs its host."""
    _one_form_schema(schema)
    servers = {"source_type": {"enum": ["postgresql", "mysql"]}}
    host = {"if": {"required": ["source_type"], "properties": servers},
            "then": {"properties": {"connection_params": {"required": ["host"],
                                                          "properties": {"host": {"type": "string"}}}}}}
    schema["allOf"] = [*_table_rules(), host]


class EtlRunRequest(_TableFields):
    """`etl-run-requested`: apply one table, or a job of several tables of one data source, exactly
    once. The origin's job-config fields, versioned.

    A job names its tables in `tables` (each with the table fields, docs/jobs.md); the one-table
    form has those fields at the top level and is a job of one table (`table_specs()`)."""

    model_config = ConfigDict(json_schema_extra=_request_schema)

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this message's schema.")
    data_source_id: int = Field(..., ge=0, description="Django DataSource id.")
    etl_run_id: int | None = Field(
        None, ge=0, description="Django ETLRun id; the run's identity when present."
    )
    source_type: Literal["postgresql", "mysql", "sqlite"]
    connection_params: ConnectionParams
    schema_name: SourceIdentifier | None = Field(
        None, description="Source schema (PostgreSQL schema; MySQL database). Default: the connection's."
    )
    tables: list[TableSpec] | None = Field(
        None, description=f"A job: 1 to {c.MAX_JOB_TABLES} tables of this data source, read in one source "
        "snapshot and applied in one BigQuery transaction (docs/jobs.md). Absent: the table fields are at "
        "the top level (one table).", json_schema_extra={"minItems": 1, "maxItems": c.MAX_JOB_TABLES},
    )
    context: dict[str, Any] | None = Field(
        None, description="Opaque JSON object (at most 4096 characters as compact JSON, non-ASCII "
        "escaped) echoed in every event of the run, "
        "e.g. Django's job id, environment or tenant; the worker never reads it.",
    )
    strict_types: bool = Field(
        False,
        description="Fail the run (permanently) on a value BigQuery cannot hold (a zero date, "
        "±infinity, ...) instead of loading it as NULL and counting it in values_nulled.",
    )

    @field_validator("context")
    @classmethod
    def _small_context(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_CONTEXT_BYTES:
            raise ValueError(f"context must be at most {MAX_CONTEXT_BYTES} bytes as JSON")
        return value

    @field_validator("tables")
    @classmethod
    def _a_job_fits_one_transaction(cls, value: list[TableSpec] | None) -> list[TableSpec] | None:
        if value is None:
            return value
        if not 1 <= len(value) <= c.MAX_JOB_TABLES:
            raise ValueError(
                f"a job names 1 to {c.MAX_JOB_TABLES} tables, not {len(value)}: its commit is one BigQuery "
                f"transaction, which modifies at most {c.BIGQUERY_TRANSACTION_MAX_TABLES} tables, two of "
                "them the ledger and the heads table (docs/jobs.md); split it into several jobs")
        dests = [spec.dest_table_name for spec in value]
        repeated = sorted({name for name in dests if dests.count(name) > 1})
        if repeated:
            raise ValueError(f"a job loads each destination once; repeated: {', '.join(repeated)}")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> EtlRunRequest:
        if self.source_type != "sqlite" and not self.connection_params.host:
            raise ValueError(f"{self.source_type} sources need connection_params.host")
        loads = [spec.load_type for spec in self.tables] if self.tables is not None else [self.load_type]
        if self.source_type not in ("postgresql", "mysql") and c.CDC in loads:
            raise ValueError(f"load_type cdc reads PostgreSQL's or MySQL's change log, not "
                             f"{self.source_type}'s")
        if self.tables is None:
            missing = [name for name in _IDENTITY_FIELDS if getattr(self, name) is None]
            if missing:
                raise ValueError(f"give {', '.join(missing)} (one table), or tables (a job)")
            return self
        both = [name for name in TABLE_FIELDS if getattr(self, name) != _top_level_default(name)]
        if both:
            raise ValueError(f"a job gives the table fields inside each of its tables, not at the top level: "
                             f"{', '.join(both)}")
        return self

    def table_specs(self) -> tuple[TableSpec, ...]:
        """The job's tables in order: `tables`, or the top-level fields as the one table."""
        if self.tables is not None:
            return tuple(self.tables)
        return (TableSpec.model_validate({name: getattr(self, name) for name in TABLE_FIELDS}),)

    def describe_tables(self) -> str:
        """`schema.source → dest` of every table, for logs and operators."""
        schema = f"{self.schema_name}." if self.schema_name else ""
        return ", ".join(f"{schema}{spec.source_table_name} → {spec.dest_table_name}"
                         for spec in self.table_specs())


def decode_request(data: bytes) -> EtlRunRequest:
    """Parse a request body; any failure is one permanent MessageDecodeError carrying the raw bytes."""
    try:
        return EtlRunRequest.model_validate_json(data)
    except ValidationError as exc:
        raise MessageDecodeError(_describe_validation_error(exc), raw=data) from None
    except (ValueError, TypeError) as exc:  # pragma: no cover - pydantic wraps most errors
        raise MessageDecodeError(f"invalid request: {exc}", raw=data) from None


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (+{more} more)" if more > 0 else ""
    return "invalid etl-run-requested message: " + "; ".join(parts) + suffix


# --- events --------------------------------------------------------------------------------------
class ErrorInfo(_Frozen):
    type: str = Field(..., description="Error class, e.g. SourceConnectionError.")
    message: str = Field(..., description="Human-readable reason (secrets redacted).")
    retryable: bool = Field(
        ..., description="True: a transient kind of error, the same request may succeed later. Whether "
        "another delivery will come is the event's will_retry.",
    )


class _Event(_Frozen):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(..., description="Unique per (run, attempt, seq); duplicates share it.")
    run_id: str = Field(..., description="Stable run identity across redelivery and replay.")
    data_source_id: int | None = Field(..., description="Null only when the request was unreadable.")
    etl_run_id: int | None
    seq: int = Field(..., ge=1, description="Order of this event within its attempt.")
    attempt: int = Field(..., ge=1, description="Delivery attempt that produced this event.")
    occurred_at: datetime = Field(..., description="When it happened (UTC).")
    dest_table: str | None
    load_type: LoadType | None
    rows_extracted: int = Field(0, ge=0, description="Rows read from the source so far.")
    rows_loaded: int = Field(0, ge=0, description="Rows staged in BigQuery so far.")
    batches_loaded: int = Field(0, ge=0, description="Source fetches so far (ETL_BATCH_SIZE rows each).")
    duration_seconds: float = Field(0.0, ge=0, description="Seconds since this delivery started.")
    context: dict[str, Any] | None = Field(None, description="The request's context, as sent.")


class RunStarted(_Event):
    """A delivery of the request started work."""

    event_type: Literal["run.started"] = c.RUN_STARTED
    source_type: str
    source_table: str
    window_column: str | None = None
    window_low: str | None = Field(None, description="Inclusive window start, once planned.")
    rows_expected: int | None = Field(
        None, ge=0, description="COUNT(*) of the rows to read, in the snapshot.")
    column_names: dict[str, str] = Field(
        default_factory=dict, description="Source column name → BigQuery column name (docs/names.md).")
    table: str | None = Field(
        None, description="The destination table this event is about (a job sends one run.started per "
        "table; dest_table is null for a job of several tables).")


class RunProgress(_Event):
    """Counters while a run extracts and stages; at most one per batch and per interval."""

    event_type: Literal["run.progress"] = c.RUN_PROGRESS
    phase: Literal["extracting", "committing"]
    rows_expected: int | None = Field(None, ge=0, description="As in run.started.")
    fraction: float | None = Field(
        None, ge=0, le=1, description="rows_extracted / rows_expected while extracting; 1 when committing.")
    table: str | None = Field(
        None, description="While extracting: the destination table being read (a job reads its tables one "
        "after the other; the counters and fraction are that table's). Null when committing: the event is "
        "about the whole job.")
    sub_window: int | None = Field(
        None, ge=1, description="A run read in sub-windows (ETL_CHUNK_ROWS): the 1-based number of the "
        "sub-window being read or committed, counted from the run's first delivery.")
    sub_window_low: str | None = Field(None, description="That sub-window's inclusive start.")
    sub_window_high: str | None = Field(None, description="That sub-window's exclusive end.")
    rows_committed: int | None = Field(
        None, ge=0, description="A run read in sub-windows: its rows already committed in earlier "
        "sub-windows, by this delivery and earlier ones (durable whatever happens next).")
    chunk: int | None = Field(
        None, ge=1, description="A catalog run read in key chunks (ETL_CHUNK_ROWS): the 1-based number, in "
        "key order, of the chunk being read; chunks finished by earlier deliveries are not read again.")
    chunks: int | None = Field(None, ge=1, description="That run's number of chunks (its plan's).")


class TableCompleted(_Frozen):
    """One committed table of a job, as run.completed lists it: store its watermark as that table's
    last_sync_value."""

    dest_table: str
    source_table: str | None = Field(None, description="schema.table read from the source.")
    load_type: LoadType
    window_column: str | None = None
    window_low: str | None = Field(None, description="Inclusive window start (transactional, merge).")
    window_high: str | None = Field(None, description="Exclusive window end (transactional, merge).")
    watermark: str | None = Field(None, description="As run.completed's watermark, for this table.")
    watermark_key: str | None = Field(None, description="As run.completed's watermark_key, for this table.")
    rows_extracted: int = Field(0, ge=0)
    rows_loaded: int = Field(0, ge=0)
    batches_loaded: int = Field(0, ge=0)
    source_row_count: int | None = Field(None, ge=0, description="COUNT(*) in the job's read snapshot.")
    values_nulled: dict[str, int] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    quality: dict[str, Any] | None = None
    cdc: dict[str, Any] | None = Field(
        None, description="A cdc run: snapshot (the first run's load), start and end (change-log positions: "
        "the next run starts at end), inserts, updates, deletes, truncates (changes read, before keeping "
        "the last per key), transactions, newest_change_at (source commit time of the newest change "
        "applied), lag_seconds (from it to the commit); PostgreSQL: slot, publication, retained_wal_bytes; "
        "MySQL/MariaDB: binlog_start, binlog_end (file:offset), server_id (docs/cdc.md).",
    )


class RunCompleted(_Event):
    """The run's rows are committed (by this delivery or an earlier one: the content is the same)."""

    event_type: Literal["run.completed"] = c.RUN_COMPLETED
    window_column: str | None = None
    window_low: str | None = Field(None, description="Inclusive window start (transactional, merge).")
    window_high: str | None = Field(None, description="Exclusive window end (transactional, merge).")
    watermark: str | None = Field(
        None, description="Store as last_sync_value, verbatim: the next run starts here (transactional, "
        "merge). An opaque text in the cursor's own form: never compare watermarks as strings, compare "
        "their watermark_key.",
    )
    watermark_key: str | None = Field(
        None, description="A text that sorts like the watermark (plain string order): use it to keep the "
        "newest watermark when events arrive out of order.",
    )
    source_row_count: int | None = Field(None, ge=0, description="COUNT(*) in the read snapshot.")
    committed_at: datetime = Field(
        ..., description="When the commit transaction ran (BigQuery's clock); also this event's "
        "occurred_at, so that every repeat of the event is identical.",
    )
    values_nulled: dict[str, int] = Field(
        default_factory=dict,
        description="Per column: values BigQuery cannot hold, loaded as NULL (see docs/types.md).",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Things Django should show, e.g. a destination column the source no longer has, "
        "or a violated quality rule whose on_violation is warn.",
    )
    quality: dict[str, Any] | None = Field(
        None, description="What the run measured on its rows: rows, null_counts (per BigQuery column, "
        "at most 500, those with NULLs), cursor_min, cursor_max, and the violated rules (docs/quality.md).",
    )
    cdc: dict[str, Any] | None = Field(
        None, description="A cdc run: snapshot (the first run's load), start and end (change-log positions: "
        "the next run starts at end), inserts, updates, deletes, truncates (changes read, before keeping "
        "the last per key), transactions, newest_change_at (source commit time of the newest change "
        "applied), lag_seconds (from it to the commit); PostgreSQL: slot, publication, retained_wal_bytes; "
        "MySQL/MariaDB: binlog_start, binlog_end (file:offset), server_id (docs/cdc.md).",
    )
    sub_windows: int | None = Field(
        None, ge=1, description="A window of more than ETL_CHUNK_ROWS rows: how many sub-windows it was "
        "committed in, each durable on its own (a redelivery goes on after the last committed one); the "
        "counters, window and quality are the whole run's. Null: committed in one transaction.",
    )
    tables: list[TableCompleted] = Field(
        default_factory=list, description="Every table of the job, in request order, with its counters, "
        "window, watermark and quality (a one-table job: its one table, also reported at the top level; a "
        "job of several: the top level has the summed counters and source_row_count, each table's warnings "
        "prefixed with its name, and null table fields).",
    )


class RunFailed(_Event):
    """The delivery failed. `will_retry` says whether Pub/Sub will deliver the request again."""

    event_type: Literal["run.failed"] = c.RUN_FAILED
    error: ErrorInfo
    will_retry: bool = Field(
        ..., description="True: another delivery will come (a transient error, attempts left). False: "
        "this run is over unless replayed: failed for good, or (run.dead_lettered follows) dead-lettered.",
    )


class RunDeadLettered(_Event):
    """The last delivery failed transiently: Pub/Sub moves the request to the dead-letter topic,
    where it waits for `etl-worker replay`."""

    event_type: Literal["run.dead_lettered"] = c.RUN_DEAD_LETTERED
    error: ErrorInfo = Field(..., description="The last delivery's error.")
    dead_letter_topic: str


class RunReplayed(_Event):
    """An operator republished the dead-lettered request (`etl-worker replay`): deliveries resume,
    with attempt numbers going on from the earlier ones."""

    event_type: Literal["run.replayed"] = c.RUN_REPLAYED
    replay_of: str = Field(..., description="Message id of the dead-lettered copy.")
    replay_count: int = Field(..., ge=1, description="How many times this request has been replayed.")


Event = RunStarted | RunProgress | RunCompleted | RunFailed | RunDeadLettered | RunReplayed

# Every message of the contract, by the name of its schema file.
SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "etl-run-requested": EtlRunRequest,
    "run.started": RunStarted,
    "run.progress": RunProgress,
    "run.completed": RunCompleted,
    "run.failed": RunFailed,
    "run.dead_lettered": RunDeadLettered,
    "run.replayed": RunReplayed,
}


def json_schema(name: str) -> dict[str, Any]:
    model = SCHEMA_MODELS[name]
    # Django writes requests (validation side) and reads events (serialization side).
    mode: Literal["validation", "serialization"] = (
        "validation" if model is EtlRunRequest else "serialization")
    schema = model.model_json_schema(mode=mode)
    if mode == "serialization":
        _open(schema)  # events gain optional fields without a new version: consumers must take them
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://etl-worker/schemas/{name}.v{SCHEMA_VERSION}.json"
    return schema


def _open(schema: Any) -> None:
    """Every object of an event schema admits properties it does not list."""
    if isinstance(schema, dict):
        if schema.get("additionalProperties") is False:
            schema["additionalProperties"] = True
        for value in schema.values():
            _open(value)
    elif isinstance(schema, list):
        for item in schema:
            _open(item)


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def utcnow() -> datetime:
    return datetime.now(UTC)


def dumps_schema(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"
