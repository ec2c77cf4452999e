"""Destination schema rules: which source columns a BigQuery table can take, and what must change.

Pure functions over names and type strings, so every rule is tested row by row without a client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.cloud import bigquery

from worker import errors
from worker.columns import Column

# tables.get answers with legacy type names (INTEGER, FLOAT, ...) whatever name created the column.
_ALIASES = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "DECIMAL": "NUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
    "RECORD": "STRUCT",
}
# Source type -> destination types that hold every value of it exactly. The commit CASTs into them;
# anything else (narrowing, STRING <-> JSON, scalar <-> ARRAY) is refused.
_WIDENINGS: Mapping[str, frozenset[str]] = {
    "INT64": frozenset({"NUMERIC", "BIGNUMERIC"}),
    "NUMERIC": frozenset({"BIGNUMERIC"}),
}


@dataclass(frozen=True)
class ExistingColumn:
    """A destination column as tables.get reports it (type already normalised)."""

    name: str
    bq_type: str
    repeated: bool

    @property
    def described(self) -> str:
        return f"ARRAY<{self.bq_type}>" if self.repeated else self.bq_type


@dataclass(frozen=True)
class SchemaPlan:
    """What open_staging must do to the destination before loading."""

    new_columns: tuple[Column, ...]  # to add with ALTER TABLE ... ADD COLUMN (nullable)
    dest_types: Mapping[str, str]  # destination type of every source column, for the commit's SELECT
    missing: tuple[str, ...] = ()  # destination columns the source no longer sends: new rows get NULL

    def warnings(self, dest_table: str) -> tuple[str, ...]:
        """What run.completed reports about this plan (the column stays: dropping data is for a human)."""
        return tuple(
            f"column {name!r} of {dest_table} is no longer in the source columns: it is kept, and the "
            "rows of this run have NULL in it"
            for name in self.missing
        )


def normalise_type(bq_type: str) -> str:
    upper = bq_type.upper()
    return _ALIASES.get(upper, upper)


def existing_columns(fields: Iterable[bigquery.SchemaField]) -> list[ExistingColumn]:
    return [
        ExistingColumn(field.name, normalise_type(field.field_type), field.mode == "REPEATED")
        for field in fields
    ]


def plan_schema(existing: Iterable[ExistingColumn], columns: tuple[Column, ...]) -> SchemaPlan:
    """Compare the destination with the source columns; raise SchemaMismatchError on a conflict.

    New source columns are to be added; destination columns the source no longer sends are kept
    (listed in `missing`).

    BigQuery column names are case-insensitive, so `ID` and `id` are the same column.
    """
    existing = list(existing)
    by_name = {col.name.lower(): col for col in existing}
    new: list[Column] = []
    dest_types: dict[str, str] = {}
    for column in columns:
        old = by_name.get(column.name.lower())
        if old is None:
            new.append(column)
            dest_types[column.name] = column.bq_type
        else:
            dest_types[column.name] = _checked_type(column, old)
    sent = {column.name.lower() for column in columns}
    missing = tuple(col.name for col in existing if col.name.lower() not in sent)
    return SchemaPlan(tuple(new), dest_types, missing)


def _checked_type(column: Column, old: ExistingColumn) -> str:
    wanted = normalise_type(column.bq_type)
    same_shape = old.repeated == column.repeated
    if same_shape and old.bq_type == wanted:
        return column.bq_type
    if same_shape and old.bq_type in _WIDENINGS.get(wanted, ()):
        return old.bq_type
    new_type = f"ARRAY<{wanted}>" if column.repeated else wanted
    raise errors.SchemaMismatchError(
        f"column {column.name!r}: destination has {old.described}, source now gives {new_type} "
        f"(source type {column.source_type}); nothing was loaded"
    )


# BigQuery clusters on at most four top-level columns of these types.
MAX_CLUSTERING_COLUMNS = 4
CLUSTERABLE_TYPES = frozenset({"INT64", "NUMERIC", "BIGNUMERIC", "BOOL", "STRING", "DATE", "DATETIME",
                               "TIMESTAMP"})


def clustering_fields(columns: tuple[Column, ...], key: tuple[str, ...]) -> list[str] | None:
    """The merge key's leading columns BigQuery can cluster by (None: no clustering)."""
    by_name = {col.name: col for col in columns}
    usable = []
    for name in key[:MAX_CLUSTERING_COLUMNS]:
        col = by_name[name]
        if col.repeated or col.bq_type not in CLUSTERABLE_TYPES:
            break  # clustering sorts by the columns in order: stop at the first that cannot be one
        usable.append(name)
    return usable or None


def schema_fields(columns: tuple[Column, ...], *, staging: bool) -> list[bigquery.SchemaField]:
    """SchemaFields in column order: destination types (with the source name as description where
    it changed), or staging types (JSON as STRING)."""
    return [
        bigquery.SchemaField(col.name, col.staging_bq_type, mode=col.bq_mode) if staging
        else bigquery.SchemaField(col.name, col.bq_type, mode=col.bq_mode, description=col.description)
        for col in columns
    ]
