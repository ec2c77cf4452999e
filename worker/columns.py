"""A column as it crosses from source to sink: its name, source type, Arrow type and BigQuery type.

Sources build these from reflection and the type-mapping table; the spool writes Parquet with the
Arrow types; the sink creates and evolves BigQuery tables from the BigQuery types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

# BigQuery types that staging stores differently from the destination (loaded as STRING, converted
# with a SQL expression at commit time). Real BigQuery cannot load Parquet into a JSON column.
STAGED_AS_STRING = {"JSON": "PARSE_JSON({})"}


@dataclass(frozen=True)
class Column:
    name: str
    source_type: str  # as the source database names it, e.g. "numeric(12, 2)"
    arrow_type: pa.DataType  # type of the values in batches and Parquet parts
    bq_type: str  # destination type: INT64, NUMERIC, BIGNUMERIC, FLOAT64, BOOL, STRING, BYTES,
    #               DATE, DATETIME, TIME, TIMESTAMP, JSON
    repeated: bool = False  # BigQuery mode REPEATED (arrow_type is then a list type)
    source_name: str | None = None  # the source's own name when `name` differs (docs/names.md)

    @property
    def bq_mode(self) -> str:
        return "REPEATED" if self.repeated else "NULLABLE"

    @property
    def description(self) -> str | None:
        """The BigQuery column description: the source's own name, where the name had to change."""
        if self.source_name is None or self.source_name == self.name:
            return None
        return f"Source column: {self.source_name}"

    @property
    def staging_bq_type(self) -> str:
        return "STRING" if self.bq_type in STAGED_AS_STRING else self.bq_type


# The Arrow type each BigQuery type travels as, in batches and in the Parquet parts loaded into
# staging: one to one, so a part's schema follows from the BigQuery schema alone. JSON is staged as
# STRING; decimals carry BigQuery's own precision and scale (NUMERIC(38, 9), BIGNUMERIC(76, 38)).
BQ_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "JSON": pa.string(),
    "BYTES": pa.binary(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "DATETIME": pa.timestamp("us"),  # no time zone: a wall-clock DATETIME
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),  # an instant
}


def bq_arrow_type(bq_type: str, repeated: bool = False) -> pa.DataType:
    """The Arrow type of a BigQuery column (a list for REPEATED)."""
    item = BQ_ARROW_TYPES[bq_type]
    return pa.list_(item) if repeated else item


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The explicit schema of batches and Parquet parts, derived from the columns' BigQuery types."""
    return pa.schema(
        [pa.field(col.name, bq_arrow_type(col.bq_type, col.repeated), nullable=True) for col in columns]
    )
