"""Which runs are read in key chunks (worker/catalog_chunk_run.py `chunked`): a one-table catalog
run above ETL_CHUNK_ROWS whose table has a loaded key; everything else keeps the unchunked path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pytest

from tests.unit.stubs import job_request, request
from worker.catalog_chunk_run import chunked
from worker.columns import Column
from worker.messages import TableSpec
from worker.sources.base import KeyBound, KeyRange, RangeRead
from worker.table_run import TableRun

ID = Column("id", "bigint", pa.int64(), "INT64")


@dataclass
class Table:
    """A source table with a key (the KeyChunked reads are never called by `chunked`)."""

    chunk_key: tuple[str, ...] = ("id",)
    columns: tuple[Column, ...] = (ID,)

    def key_split_points(self, rows: int) -> list[KeyBound]:
        raise AssertionError("not read")

    def key_bound(self, values: Sequence[Any]) -> KeyBound:
        raise AssertionError("not read")

    def read_key_ranges(self, ranges: Sequence[KeyRange], batch_rows: int) -> Iterator[RangeRead]:
        raise AssertionError("not read")


@dataclass
class Planned:
    source: Any = field(default_factory=Table)
    expected_rows: int = 101


def choose(specs: Sequence[TableSpec], planned: Planned, chunk_rows: int = 100) -> bool:
    return chunked(specs, cast(TableRun, planned), chunk_rows)


def test_a_big_catalog_table_with_a_key_is_chunked() -> None:
    assert choose(request().table_specs(), Planned())


@pytest.mark.parametrize(("why", "specs", "planned", "chunk_rows"), [
    ("at the threshold", request().table_specs(), Planned(expected_rows=100), 100),
    ("chunking off", request().table_specs(), Planned(), 0),
    ("no key", request().table_specs(), Planned(source=Table(chunk_key=())), 100),
    ("key not loaded", request().table_specs(), Planned(source=Table(columns=())), 100),
    ("not a catalog run", request("transactional").table_specs(), Planned(), 100),
    ("quality rules", request(quality_rules=[{"rule": "unique", "columns": ["id"]}]).table_specs(),
     Planned(), 100),
    ("a job of two tables", job_request(*({"source_table_name": t, "dest_table_name": t,
                                           "load_type": "catalog"} for t in ("a", "b"))).table_specs(),
     Planned(), 100),
    ("a source without key chunks", request().table_specs(), Planned(source=object()), 100),
])
def test_anything_else_keeps_the_unchunked_path(why: str, specs: Sequence[TableSpec], planned: Planned,
                                                chunk_rows: int) -> None:
    assert not choose(specs, planned, chunk_rows), why
