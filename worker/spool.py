"""Spool Arrow batches to Parquet part files of bounded size, for loading into BigQuery one by one.

Each part holds exactly the table's columns, in table order, with the explicit Arrow schema: some
loaders (bqemulator) match Parquet columns by position, and real BigQuery infers nothing when the
schema is explicit. The caller loads each finished part and deletes it, so the spool directory holds
at most the part being written plus the one being loaded, whatever the size of the table.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from worker.columns import Column, arrow_schema

log = logging.getLogger(__name__)

# SNAPPY: BigQuery documents GZIP, LZO_1C, LZO_1X, SNAPPY and ZSTD for a Parquet load's data
# blocks, not LZ4_RAW, though LZ4_RAW wrote the 1M-row bench table's parts with 0.18 s of CPU against
# SNAPPY's 0.21-0.23 (both without statistics) and the emulator's DuckDB reads it: a load the real
# service might refuse is not worth 0.03 s (docs/performance.md, issue 16).
PARQUET_COMPRESSION = "snappy"
# No column statistics: a part is loaded whole and deleted, nothing reads its min/max; writing them
# cost 0.04-0.05 s per 1M rows of the bench table (the min/max of every string page).
PARQUET_STATISTICS = False
# No dictionary pages: they tripled the cost of writing a part (profile in docs/performance.md) and,
# on the high-cardinality columns extracted tables are made of, did not make parts smaller.
PARQUET_DICTIONARY = False
# Batches handed to the writing thread and not yet written: bounds the memory the overlap costs.
WRITES_AHEAD = 2


def part_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the parts' settings (above)."""
    return pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION, use_dictionary=PARQUET_DICTIONARY,
                            write_statistics=PARQUET_STATISTICS)


class PartWriter:
    """Writes batches into `part-NNNNN.parquet` files of at most `part_rows` rows.

    Use as a context manager: on exit the private spool directory and any part the caller did not
    delete are removed, whether the run succeeded or not.

    Parquet encoding and compression run on one writing thread (Arrow releases the GIL while it
    writes), in order, overlapping the extraction of the next batches: `write` returns the parts
    finished so far, `finish` the rest. A write error is raised by the next call.
    """

    def __init__(self, columns: tuple[Column, ...], *, part_rows: int, spool_dir: Path | None = None) -> None:
        if part_rows < 1:
            raise ValueError(f"part_rows must be >= 1, got {part_rows}")
        self.schema = arrow_schema(columns)
        self.part_rows = part_rows
        self.rows_written = 0
        self.parts_written = 0
        # A private directory per writer: concurrent runs never see each other's parts.
        self.directory = Path(tempfile.mkdtemp(prefix="etl-spool-", dir=spool_dir))
        self._open: tuple[pq.ParquetWriter, Path] | None = None  # the part being written
        self._part_row_count = 0
        self._writes: deque[Future[list[Path]]] = deque()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-writer")

    def write(self, batch: pa.RecordBatch) -> list[Path]:
        """Append `batch`; return the parts finished since the last call (each `part_rows` rows)."""
        self._writes.append(self._thread.submit(self._write, self._conform(batch)))
        finished: list[Path] = []
        while self._writes and (len(self._writes) > WRITES_AHEAD or self._writes[0].done()):
            finished += self._writes.popleft().result()
        return finished

    def finish(self) -> list[Path]:
        """Wait for every write; close the part being written, if any rows went into it; return the
        parts finished since the last call."""
        finished: list[Path] = []
        while self._writes:
            finished += self._writes.popleft().result()
        return finished + ([self._close_part()] if self._open is not None else [])

    def close(self) -> None:
        """Remove the spool directory and everything left in it."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._writes.clear()
        if self._open is not None:
            self._open[0].close()
            self._open = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write(self, batch: pa.RecordBatch) -> list[Path]:
        finished: list[Path] = []
        offset = 0
        while offset < batch.num_rows:
            take = min(self.part_rows - self._part_row_count, batch.num_rows - offset)
            self._current_writer().write_batch(batch.slice(offset, take))
            self._part_row_count += take
            self.rows_written += take
            offset += take
            if self._part_row_count == self.part_rows:
                finished.append(self._close_part())
        return finished

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with exactly the schema's columns, in its order and types."""
        if batch.schema.equals(self.schema):
            return batch
        missing = [name for name in self.schema.names if name not in batch.schema.names]
        if missing:
            raise ValueError(f"batch lacks columns {missing}; expected {self.schema.names}")
        arrays = [batch.column(field.name).cast(field.type) for field in self.schema]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _current_writer(self) -> pq.ParquetWriter:
        if self._open is None:
            path = self.directory / f"part-{self.parts_written:05d}.parquet"
            self._open = (part_writer(path, self.schema), path)
        return self._open[0]

    def _close_part(self) -> Path:
        if self._open is None:
            raise RuntimeError("no part is open")
        writer, path = self._open
        writer.close()
        rows = self._part_row_count
        self._open, self._part_row_count = None, 0
        self.parts_written += 1
        log.debug("spooled part %s (%d rows)", path.name, rows)
        return path
