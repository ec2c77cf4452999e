"""PartWriter: bounded parts, the table's schema in every part, nothing left behind."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from worker.columns import Column, arrow_schema
from worker.spool import PartWriter

COLUMNS = (
    Column("id", "integer", pa.int64(), "INT64"),
    Column("amount", "numeric(38, 9)", pa.decimal128(38, 9), "NUMERIC"),
    Column("tags", "text[]", pa.list_(pa.string()), "STRING", repeated=True),
)
SCHEMA = arrow_schema(COLUMNS)


def batch(start: int, rows: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [
            {"id": i, "amount": Decimal(i) / 4, "tags": [str(i)] if i % 2 else None}
            for i in range(start, start + rows)
        ],
        schema=SCHEMA,
    )


def ids(paths: list[Path]) -> list[list[int]]:
    return [pq.read_table(path).column("id").to_pylist() for path in paths]


def test_parts_hold_at_most_part_rows_and_keep_every_row_in_order(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=4, spool_dir=tmp_path) as writer:
        # Parts are written on a thread: write() returns those finished so far, finish() the rest.
        first = writer.write(batch(0, 3))  # fills no part
        second = writer.write(batch(3, 7))  # completes parts 0 (0..3) and 1 (4..7), leaves 8, 9 open
        last = writer.finish()

        assert first == []
        assert ids([*second, *last]) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert (writer.rows_written, writer.parts_written) == (10, 3)
        assert [p.name for p in [*second, *last]] == [
            "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
        ]


def test_many_batches_come_back_as_parts_in_order(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=7, spool_dir=tmp_path) as writer:
        parts = [part for start in range(0, 100, 3) for part in writer.write(batch(start, 3))]
        parts += writer.finish()
        assert [row for part in ids(parts) for row in part] == list(range(102))
        assert all(len(part) == 7 for part in ids(parts)[:-1])


def test_a_write_error_is_raised_by_the_next_call(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=4, spool_dir=tmp_path) as writer:
        writer.directory.rmdir()  # the part file cannot be created
        with pytest.raises(OSError):
            writer.write(batch(0, 3))
            writer.finish()


def test_a_batch_exactly_filling_a_part_leaves_nothing_for_finish(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=5, spool_dir=tmp_path) as writer:
        assert len(writer.write(batch(0, 5)) + writer.finish()) == 1


def test_no_rows_no_parts(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=5, spool_dir=tmp_path) as writer:
        assert writer.write(batch(0, 0)) == []
        assert writer.finish() == []


def test_parts_carry_the_explicit_schema_and_values(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=100, spool_dir=tmp_path) as writer:
        writer.write(batch(0, 3))
        (part,) = writer.finish()
        table = pq.read_table(part)

    assert table.schema.equals(SCHEMA)
    assert table.to_pylist()[1] == {"id": 1, "amount": Decimal("0.250000000"), "tags": ["1"]}


def test_batches_are_reordered_and_cast_to_the_table_schema(tmp_path: Path) -> None:
    # Given a batch with the columns in another order and a narrower integer type
    shuffled = pa.RecordBatch.from_pydict(
        {
            "tags": [["a"]],
            "amount": pa.array([Decimal("1.5")], pa.decimal128(38, 9)),
            "id": pa.array([7], pa.int32()),
        }
    )
    with PartWriter(COLUMNS, part_rows=10, spool_dir=tmp_path) as writer:
        writer.write(shuffled)
        (part,) = writer.finish()
        # Then the part has the table's order and types: some loaders match columns by position
        assert pq.read_schema(part).equals(SCHEMA)
        assert pq.read_table(part).to_pylist() == [{"id": 7, "amount": Decimal("1.500000000"), "tags": ["a"]}]


def test_a_batch_missing_a_column_is_refused(tmp_path: Path) -> None:
    missing_amount = pa.RecordBatch.from_pydict({"id": [1], "tags": [None]})
    with (
        PartWriter(COLUMNS, part_rows=10, spool_dir=tmp_path) as writer,
        pytest.raises(ValueError, match="amount"),
    ):
        writer.write(missing_amount)


def test_exit_removes_the_spool_directory_and_unloaded_parts(tmp_path: Path) -> None:
    with PartWriter(COLUMNS, part_rows=2, spool_dir=tmp_path) as writer:
        parts = writer.write(batch(0, 5)) + writer.finish()
        parts[0].unlink()  # the caller loaded and deleted this one
        directory = writer.directory
        assert directory.parent == tmp_path

    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []


def test_exit_after_an_error_closes_the_open_part_and_cleans_up(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), PartWriter(COLUMNS, part_rows=100, spool_dir=tmp_path) as writer:
        writer.write(batch(0, 3))  # a part is open
        raise RuntimeError("source failed")
    assert list(tmp_path.iterdir()) == []


def test_part_rows_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PartWriter(COLUMNS, part_rows=0, spool_dir=tmp_path)
