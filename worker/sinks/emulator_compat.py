"""Every workaround for bqemulator 1.4.0, in one place. Real BigQuery never takes these paths.

Each function says which documented BigQuery behaviour the emulator lacks. The sink calls them only
when it was built with `emulator=True`; docs/bigquery-emulator.md lists the gaps and how the real
path is tested.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from google.cloud import bigquery

from worker.columns import Column
from worker.sinks import bigquery_sql
from worker.sinks.bigquery_client import EMULATOR_RETRY_TIMEOUT_S
from worker.sinks.bigquery_schema import ExistingColumn

log = logging.getLogger(__name__)

_PARAM_RE = re.compile(r"(?<!@)@([A-Za-z_][A-Za-z0-9_]*)")


def default_api_retry(emulator: bool) -> bigquery.retry.Retry:
    """Real BigQuery: the library's retry. bqemulator answers unsupported calls with HTTP 500,
    which the default retry would repeat for 10 minutes; bound it so the failure shows in seconds."""
    if emulator:
        return bigquery.DEFAULT_RETRY.with_timeout(EMULATOR_RETRY_TIMEOUT_S)
    return bigquery.DEFAULT_RETRY


def script_query(
    sql: str, params: Sequence[bigquery.ScalarQueryParameter], emulator: bool
) -> tuple[str, list[bigquery.ScalarQueryParameter]]:
    """Real BigQuery accepts query parameters in multi-statement scripts. bqemulator's script
    interpreter drops them ("Values were not provided for the following prepared statement
    parameters"), so on the emulator the values are written into the script as escaped literals."""
    if not emulator:
        return sql, list(params)
    return inline_parameters(sql, params), []


def inline_parameters(sql: str, params: Sequence[bigquery.ScalarQueryParameter]) -> str:
    """Replace each `@name` with its parameter as a SQL literal, in one pass (values are not rescanned)."""
    by_name = {param.name: param for param in params}

    def literal(match: re.Match[str]) -> str:
        param = by_name.get(match.group(1))
        if param is None:
            raise ValueError(f"no value for query parameter @{match.group(1)}")
        return sql_literal(param.type_, param.value)

    return _PARAM_RE.sub(literal, sql)


def sql_literal(bq_type: str, value: object) -> str:
    """A GoogleSQL literal of `value` typed `bq_type` (the scalar types the sink's scripts use)."""
    if value is None:
        return f"CAST(NULL AS {bq_type})"
    if bq_type == "STRING" and isinstance(value, str):
        return bigquery_sql.string_literal(value)
    if bq_type == "INT64" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if bq_type == "BOOL" and isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if bq_type == "FLOAT64" and isinstance(value, (int, float)):
        number = float(value)
        return repr(number) if math.isfinite(number) else f"CAST('{number}' AS FLOAT64)"
    if bq_type == "TIMESTAMP" and isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # as the client does
        return f"TIMESTAMP '{aware.isoformat(sep=' ')}'"
    raise ValueError(f"cannot write {value!r} as a {bq_type} literal")


def load_output_rows(reported: int, staged_before: int, emulator: bool) -> int:
    """Real BigQuery: a load job's outputRows counts the rows that job wrote. bqemulator reports the
    destination table's total after the load; staging is private to one delivery and loaded one
    part at a time, so the job's own rows are the total minus what the earlier parts staged."""
    return reported - staged_before if emulator else reported


def alter_statements(table_sql: str, columns: Sequence[Column], emulator: bool) -> list[str]:
    """Real BigQuery: one ALTER TABLE with every ADD COLUMN (one metadata update; the limit is 5 per
    table per 10 s). bqemulator's parser allows one ALTER command per statement."""
    if not emulator:
        return [bigquery_sql.add_columns_sql(table_sql, columns)]
    return [bigquery_sql.add_columns_sql(table_sql, [column]) for column in columns]


def sync_catalog_after_alter(
    client: bigquery.Client, table_id: str, columns: Sequence[Column], retry: bigquery.retry.Retry
) -> None:
    """Real BigQuery: ALTER TABLE ADD COLUMN changes the schema tables.get reports. bqemulator alters
    its DuckDB table but not its catalog, so tables.get would miss the new columns; patch the
    catalog's schema (on the emulator, tables.patch touches the catalog only, never the data)."""
    table = client.get_table(table_id, retry=retry)
    known = {field.name.lower() for field in table.schema}
    added = [
        bigquery.SchemaField(col.name, col.bq_type, mode=col.bq_mode, description=col.description)
        for col in columns
        if col.name.lower() not in known
    ]
    if added:
        table.schema = [*table.schema, *added]
        client.update_table(table, ["schema"], retry=retry)
        log.info("emulator: catalog schema of %s patched with %d column(s)", table_id, len(added))


def reported_columns(existing: list[ExistingColumn], columns: Sequence[Column]) -> list[ExistingColumn]:
    """Real BigQuery reports a JSON column as JSON. bqemulator reports JSON as STRING for tables made
    by SQL DDL, so a STRING destination column that the source sends as JSON is taken as JSON.
    (A genuine STRING column cannot be told apart here; the emulator is only for tests.)"""
    json_names = {col.name.lower() for col in columns if col.bq_type == "JSON" and not col.repeated}
    return [
        ExistingColumn(old.name, "JSON", old.repeated)
        if old.bq_type == "STRING" and not old.repeated and old.name.lower() in json_names
        else old
        for old in existing
    ]
