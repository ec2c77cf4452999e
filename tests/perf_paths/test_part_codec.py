"""The Parquet parts' codec and options (worker/spool.py): SNAPPY (a codec BigQuery documents for
Parquet loads), no statistics, and still read back exactly by Arrow and by DuckDB (what the BigQuery
emulator loads them with)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from worker.columns import Column, arrow_schema
from worker.spool import PartWriter

COLUMNS = (
    Column("id", "bigint", pa.int64(), "INT64"),
    Column("amount", "numeric(12, 2)", pa.decimal128(38, 9), "NUMERIC"),
    Column("note", "text", pa.string(), "STRING"),
    Column("created_at", "timestamp", pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
    Column("ship_date", "date", pa.date32(), "DATE"),
    Column("paid", "boolean", pa.bool_(), "BOOL"),
)


def _batch(rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([
        {"id": i, "amount": Decimal(i) / 4, "note": None if i % 7 == 0 else f"note {i}",
         "created_at": datetime(2024, 1, 1, tzinfo=UTC), "ship_date": date(2024, 1, 2), "paid": i % 2 == 0}
        for i in range(rows)
    ], schema=arrow_schema(COLUMNS))


def test_parts_are_snappy_without_statistics_and_read_back_exactly(tmp_path: Path) -> None:
    batch = _batch(1_000)
    with PartWriter(COLUMNS, part_rows=10_000, spool_dir=tmp_path) as parts:
        parts.write(batch)
        (part,) = parts.finish()
        meta = duckdb.sql(f"SELECT DISTINCT compression, stats_min IS NULL FROM parquet_metadata('{part}')")
        assert meta.fetchall() == [("SNAPPY", True)]
        assert pq.read_table(part).to_batches()[0].equals(batch)
        counted = duckdb.sql(f"SELECT count(*), count(note), sum(id) FROM read_parquet('{part}')")
        assert counted.fetchone() == (1_000, 1_000 - 143, sum(range(1_000)))
