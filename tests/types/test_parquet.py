"""Parquet parts: an explicit schema derived from the BigQuery schema, and what real BigQuery needs to
load them (list inference, decimal target types). BIGNUMERIC is proven here, on the source and in the
Parquet file, because bqemulator cannot create a BIGNUMERIC table (docs/bigquery-emulator.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from tests.sources import connection_of, make_request
from worker.columns import BQ_ARROW_TYPES, Column, arrow_schema, bq_arrow_type
from worker.messages import EtlRunRequest
from worker.retry import RetryPolicy
from worker.sinks.bigquery import BigQuerySink
from worker.sources import DIALECTS, get_source
from worker.sources import typemap as tm
from worker.spool import PartWriter

# Every BigQuery type the type tables produce, scalar and REPEATED.
ALL_COLUMNS = tuple(
    Column(f"{bq.lower()}_{'rs'[not repeated]}", "src", bq_arrow_type(bq, repeated), bq, repeated)
    for bq in BQ_ARROW_TYPES
    for repeated in (False, True)
)
# (physical type, logical type) of each scalar in the Parquet file, as real BigQuery reads them.
PARQUET_TYPES = {
    "INT64": ("INT64", "None"),
    "FLOAT64": ("DOUBLE", "None"),
    "BOOL": ("BOOLEAN", "None"),
    "STRING": ("BYTE_ARRAY", "String"),
    "JSON": ("BYTE_ARRAY", "String"),  # staged as STRING; PARSE_JSON in the commit
    "BYTES": ("BYTE_ARRAY", "None"),
    "NUMERIC": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=38, scale=9)"),
    "BIGNUMERIC": ("FIXED_LEN_BYTE_ARRAY", "Decimal(precision=76, scale=38)"),
    "DATE": ("INT32", "Date"),
    "TIME": ("INT64", "Time(isAdjustedToUTC=false, timeUnit=microseconds)"),  # a wall-clock time
    "DATETIME": ("INT64", "Timestamp(isAdjustedToUTC=false, timeUnit=microseconds"),
    "TIMESTAMP": ("INT64", "Timestamp(isAdjustedToUTC=true, timeUnit=microseconds"),
}


def spool(columns: tuple[Column, ...], batches: list[pa.RecordBatch], tmp_path: Path) -> pq.ParquetFile:
    with PartWriter(columns, part_rows=1000, spool_dir=tmp_path) as writer:
        paths = [path for batch in batches for path in writer.write(batch)] + writer.finish()
        assert len(paths) == 1
        target = tmp_path / "kept.parquet"
        paths[0].rename(target)
    return pq.ParquetFile(target)


def test_parts_carry_the_explicit_schema_derived_from_the_bigquery_types(tmp_path: Path) -> None:
    # Given a column of every BigQuery type, scalar and repeated, and a row of NULLs
    batch = pa.RecordBatch.from_pylist([{}], schema=arrow_schema(ALL_COLUMNS))
    # When it is spooled
    part = spool(ALL_COLUMNS, [batch], tmp_path)
    # Then the file's Arrow schema is the one derived from the BigQuery types
    assert part.schema_arrow == arrow_schema(ALL_COLUMNS)
    # And each leaf has the Parquet type BigQuery maps to that type; arrays are 3-level LISTs
    leaves = {part.schema.column(i).path: part.schema.column(i) for i in range(len(part.schema))}
    for column in ALL_COLUMNS:
        path = f"{column.name}.list.element" if column.repeated else column.name
        physical, logical = PARQUET_TYPES[column.bq_type]
        assert leaves[path].physical_type == physical, path
        assert str(leaves[path].logical_type).startswith(logical), (path, leaves[path].logical_type)


def test_every_target_of_the_type_tables_has_the_arrow_type_of_its_bigquery_type() -> None:
    examples = [(dialect.types, ex.sa_type) for dialect in DIALECTS.values() for ex in dialect.examples]
    for table, sa_type in examples:
        target = tm.lookup(sa_type, table)
        if target is not None:
            assert target.arrow_type == bq_arrow_type(target.bq_type, target.repeated), sa_type


# --- BIGNUMERIC from the sources, through the Parquet part -------------------------------------------
BIG_MAX = Decimal("9" * 38 + "." + "9" * 38)
BIG_MIN = BIG_MAX.copy_negate()  # unary minus would round to the context's 28 digits
BIG_PG = f"""CREATE TABLE big (id int, b numeric(76, 38), b2 numeric(40, 20), ab numeric(76, 38)[]);
INSERT INTO big VALUES
  (1, '-{BIG_MAX}', '-99999999999999999999.99999999999999999999', '{{-{BIG_MAX}}}'),
  (2, '{BIG_MAX}', '99999999999999999999.99999999999999999999', '{{1e-38}}'),
  (3, '0', '0.00000000000000000001', '{{}}'),
  (4, 'NaN', 'NaN', '{{NaN}}'),
  (5, NULL, NULL, NULL)"""
BIG_MYSQL = """CREATE TABLE big (id int, b decimal(65, 30));
INSERT INTO big VALUES (1, -99999999999999999999999999999999999.999999999999999999999999999999),
  (2, 99999999999999999999999999999999999.999999999999999999999999999999),
  (3, 0.000000000000000000000000000001), (4, NULL)"""


Read = tuple[tuple[Column, ...], list[dict[str, Any]], dict[str, int]]


def read_parts(request: EtlRunRequest, tmp_path: Path) -> Read:
    with get_source(request.source_type).snapshot(request) as snap:
        part = spool(snap.columns, list(snap.iter_batches(None, 2)), tmp_path)
        return snap.columns, part.read().to_pylist(), snap.values_nulled


@pytest.fixture
def pg_big(pg_admin: sa.Engine, pg_schema: str) -> Iterator[EtlRunRequest]:
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
        conn.exec_driver_sql(BIG_PG)
        conn.exec_driver_sql("SET search_path TO DEFAULT")
    yield make_request("postgresql", connection_of(pg_admin), "big", schema_name=pg_schema)


def test_postgresql_bignumeric_values_survive_in_the_parquet_part(
    pg_big: EtlRunRequest, tmp_path: Path
) -> None:
    columns, rows, nulled = read_parts(pg_big, tmp_path)
    assert [(c.name, c.bq_type, c.repeated) for c in columns] == [
        ("id", "INT64", False), ("b", "BIGNUMERIC", False), ("b2", "BIGNUMERIC", False),
        ("ab", "BIGNUMERIC", True)]
    assert [(r["b"], r["b2"], r["ab"]) for r in rows] == [
        (BIG_MIN, Decimal("-99999999999999999999.99999999999999999999"), [BIG_MIN]),
        (BIG_MAX, Decimal("99999999999999999999.99999999999999999999"), [Decimal("1E-38")]),
        (Decimal(0), Decimal("1E-20"), []),
        (None, None, None),  # NaN: BIGNUMERIC has none
        (None, None, None),
    ]
    assert nulled == {"b": 1, "b2": 1, "ab": 1}


@pytest.fixture
def mysql_big(mysql_admin: sa.Engine, mysql_db: str) -> Iterator[EtlRunRequest]:
    with mysql_admin.connect() as conn:
        conn.exec_driver_sql(f"USE `{mysql_db}`")
        for statement in BIG_MYSQL.split(";"):
            conn.exec_driver_sql(statement)
    yield make_request("mysql", connection_of(mysql_admin, database=mysql_db), "big")


def test_mysql_decimal_65_30_survives_as_bignumeric_in_the_parquet_part(
    mysql_big: EtlRunRequest, tmp_path: Path
) -> None:
    columns, rows, nulled = read_parts(mysql_big, tmp_path)
    assert columns[1].bq_type == "BIGNUMERIC"
    wide = Decimal("99999999999999999999999999999999999.999999999999999999999999999999")
    assert [r["b"] for r in rows] == [wide.copy_negate(), wide, Decimal("1E-30"), None]
    assert nulled == {}


# --- the load job, as real BigQuery receives it ---------------------------------------------------
class _CapturingClient:
    """Enough of bigquery.Client for open_staging and load_part; keeps each load's job config."""

    def __init__(self) -> None:
        self.configs: list[bigquery.LoadJobConfig] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in ("create_dataset", "create_table", "delete_table"):
            return lambda *args, **_: args[0] if args else None
        raise AttributeError(name)

    def get_table(self, table_id: str, **_: Any) -> Any:
        from google.api_core import exceptions as gexc

        raise gexc.NotFound(table_id)

    def query(self, *_: Any, **__: Any) -> Any:
        return _Job()

    def load_table_from_file(
        self, _file: Any, _dest: str, *, job_config: bigquery.LoadJobConfig, **_: Any
    ) -> Any:
        self.configs.append(job_config)
        return _Job()


class _Job:
    output_rows = 0
    error_result = None

    def result(self, **_: Any) -> list[Any]:
        return []


def test_loads_infer_lists_and_allow_bignumeric_with_the_staging_schema(tmp_path: Path) -> None:
    client = _CapturingClient()
    sink = BigQuerySink(cast(bigquery.Client, client), project="p", dataset="d",
                        retry=RetryPolicy(max_tries=1, first_delay_s=0), api_retry=bigquery.DEFAULT_RETRY)
    staging = sink.open_staging("t", ALL_COLUMNS, "run-1", 1, "catalog")
    part = tmp_path / "part.parquet"
    part.write_bytes(b"PAR1")
    staging.load_part(part)
    (config,) = client.configs
    assert config.parquet_options.enable_list_inference is True
    assert config.decimal_target_types == frozenset({"NUMERIC", "BIGNUMERIC"})
    assert config.source_format == "PARQUET"
    # The staging schema is the BigQuery schema, JSON staged as STRING, arrays REPEATED
    assert [(f.name, f.field_type, f.mode) for f in config.schema] == [
        (c.name, "STRING" if c.bq_type == "JSON" else c.bq_type, "REPEATED" if c.repeated else "NULLABLE")
        for c in ALL_COLUMNS
    ]
