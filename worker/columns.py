"""A column as it crosses from source to sink: its name, source type, Arrow type and BigQuery type.

Sources build these from reflection and the type-mapping table; the spool writes Parquet with the
Arrow types; the sink creates and evolves BigQuery tables from the BigQuery types.
"""

from __future__ import annotations

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

    @property
    def bq_mode(self) -> str:
        return "REPEATED" if self.repeated else "NULLABLE"

    @property
    def staging_bq_type(self) -> str:
        return "STRING" if self.bq_type in STAGED_AS_STRING else self.bq_type


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(col.name, col.arrow_type, nullable=True) for col in columns])
