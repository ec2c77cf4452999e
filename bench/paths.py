"""One measured path, run in its own process: `python -m bench.paths PATH DIALECT URL SCHEMA TABLE`.

Prints one JSON line: rows read and the seconds from connecting to the last finished Parquet part
(interpreter start-up and imports are excluded, as a long-running worker never pays them per run).
Peak RSS is measured from outside by the parent (`/usr/bin/time -v`).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

if TYPE_CHECKING:
    from worker.messages import EtlRunRequest

BATCH_ROWS = 10_000  # the worker's default ETL_BATCH_SIZE
PART_ROWS = 500_000  # the worker's default ETL_PART_ROWS
DLT_CHUNK_ROWS = 50_000  # dlt's default chunk_size

Measured = Callable[[argparse.Namespace, Path], int]


# --- the worker ----------------------------------------------------------------------------------
def worker_extract(args: argparse.Namespace, spool: Path, measured: bool = False) -> int:
    """Request → finished Parquet parts, exactly as the runner does (snapshot, COUNT(*), batches,
    PartWriter), each finished part deleted as the loader would after loading it. `measured`: also
    the data-quality measures every run takes on its batches (NULL counts, the cursor's range)."""
    from worker.quality import Measures
    from worker.sources import get_source
    from worker.spool import PartWriter

    request = catalog_request(args.dialect, args.url, args.schema, args.table)
    measures = Measures(cursor="created_at" if measured else None)
    with get_source(args.dialect).snapshot(request) as snapshot:
        expected = snapshot.count_rows(None)
        rows = 0
        with PartWriter(snapshot.columns, part_rows=args.part_rows, spool_dir=spool) as parts:
            for batch in snapshot.iter_batches(None, args.batch_rows):
                rows += batch.num_rows
                if measured:
                    measures.add(batch)
                _drop_parts(parts.write(batch))
            _drop_parts(parts.finish())
    if rows != expected:
        raise SystemExit(f"extracted {rows} rows, COUNT(*) said {expected}")
    return rows


def worker_keys(args: argparse.Namespace, spool: Path) -> int:
    """A reconciling merge's key pass: every primary key of the table, read in the snapshot and
    spooled to Parquet parts (as the runner stages them), each part deleted once written."""
    from worker.messages import EtlRunRequest
    from worker.sources import get_source
    from worker.spool import PartWriter

    request = EtlRunRequest.model_validate({
        "data_source_id": 1, "source_type": args.dialect, "schema_name": args.schema,
        "source_table_name": args.table, "dest_table_name": "bench", "load_type": "merge",
        "timestamp_column": "created_at", "primary_key": ["id"], "reconcile_deletes": True,
        "connection_params": connection_params(args.url),
    })
    with get_source(args.dialect).snapshot(request) as snapshot:
        expected = snapshot.count_rows(None)
        keys = 0
        with PartWriter(snapshot.key_columns, part_rows=args.part_rows, spool_dir=spool) as parts:
            for batch in snapshot.iter_keys(args.batch_rows):
                keys += batch.num_rows
                _drop_parts(parts.write(batch))
            _drop_parts(parts.finish())
    if keys != expected:
        raise SystemExit(f"read {keys} keys, COUNT(*) said {expected}")
    return keys


def catalog_request(dialect: str, url: str, schema: str, table: str) -> EtlRunRequest:
    """The request every extraction bench reads its table with: a catalog run of the whole table."""
    from worker.messages import EtlRunRequest

    return EtlRunRequest.model_validate({
        "data_source_id": 1, "source_type": dialect, "schema_name": schema, "source_table_name": table,
        "dest_table_name": "bench", "load_type": "catalog", "connection_params": connection_params(url),
    })


def connection_params(url_text: str) -> dict[str, Any]:
    url = sa.make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return {"database": url.database or ""}
    return {"host": url.host, "port": url.port, "database": url.database or "", "username": url.username,
            "password": url.password}


def _drop_parts(paths: list[Path]) -> None:
    for path in paths:
        _SPOOL_PEAK.append(path.stat().st_size)
        path.unlink()


_SPOOL_PEAK: list[int] = []


def worker_ranges(args: argparse.Namespace, spool: Path) -> int:
    """MySQL's chunked parallel read: the table's integer primary key cut into `--readers` ranges
    (`mysql_ranges.key_ranges`), each read by the raw reader on its own connection and snapshot in
    a thread, every batch written to Parquet parts as the runner would. No COUNT(*): a chunked run
    counts per chunk, and the paths it is set against (dlt) count nothing."""
    from worker.sources import get_source
    from worker.sources.mysql_ranges import key_ranges, range_batches
    from worker.sources.read_ahead import merged
    from worker.sources.sqlalchemy_source import SqlAlchemyTable
    from worker.spool import PartWriter

    request = catalog_request(args.dialect, args.url, args.schema, args.table)
    rows = 0
    with get_source(args.dialect).snapshot(request) as snapshot:
        assert isinstance(snapshot, SqlAlchemyTable)
        read = snapshot.read_plan(None, args.batch_rows)
        ranges = key_ranges(read.conn, snapshot.sa_table, args.readers)
        streams = [functools.partial(range_batches, read.conn.engine, read, r) for r in ranges]
        with PartWriter(snapshot.columns, part_rows=args.part_rows, spool_dir=spool) as parts:
            for batch in merged(streams):
                rows += batch.num_rows
                _drop_parts(parts.write(batch))
            _drop_parts(parts.finish())
    return rows


# --- the naive loop ------------------------------------------------------------------------------
def naive_loop(args: argparse.Namespace, spool: Path) -> int:
    """What a first attempt looks like: SQLAlchemy `yield_per` rows → pyarrow (types inferred from
    the first batch) → one Parquet file."""
    engine = sa.create_engine(args.url)
    table = sa.Table(args.table, sa.MetaData(), schema=args.schema, autoload_with=engine)
    rows = 0
    writer: pq.ParquetWriter | None = None
    with engine.connect() as conn:
        query = sa.select(table).execution_options(stream_results=True, yield_per=args.batch_rows)
        for partition in conn.execute(query).partitions():
            records = [row._asdict() for row in partition]
            batch = pa.RecordBatch.from_pylist(records, schema=writer.schema if writer else None)
            if writer is None:  # decimals inferred from one value are too narrow for the next ones
                batch = batch.cast(_widened(batch.schema))
                writer = pq.ParquetWriter(spool / "naive.parquet", batch.schema)
            writer.write_batch(batch)
            rows += len(records)
    if writer is not None:
        writer.close()
    engine.dispose()
    return rows


def _widened(schema: pa.Schema) -> pa.Schema:
    return pa.schema([
        field.with_type(pa.decimal128(38, field.type.scale)) if pa.types.is_decimal(field.type) else field
        for field in schema
    ])


def raw_fetch(args: argparse.Namespace, spool: Path) -> int:
    """The driver alone: a server-side cursor's rows fetched and discarded."""
    engine = sa.create_engine(args.url)
    dbapi = engine.raw_connection()
    rows = 0
    try:
        if args.dialect == "postgresql":
            cursor = dbapi.cursor(name="bench_raw")  # psycopg2: a named cursor is server-side
        elif args.dialect == "sqlite":
            cursor = dbapi.cursor()  # sqlite3 steps through the statement as rows are fetched
        else:
            import MySQLdb.cursors

            cursor = dbapi.cursor(MySQLdb.cursors.SSCursor)
        cursor.execute(f"SELECT * FROM {args.schema}.{args.table}")
        while chunk := cursor.fetchmany(args.batch_rows):
            rows += len(chunk)
        cursor.close()
    finally:
        dbapi.close()
        engine.dispose()
    return rows


# --- dlt -----------------------------------------------------------------------------------------
def dlt_extract(backend: str) -> Measured:
    """dlt's sql_table resource with an Arrow backend, extracted and normalised to Parquet files
    (dlt's own spool before loading), chunk size dlt's default."""

    def run(args: argparse.Namespace, spool: Path) -> int:
        import dlt
        from dlt.sources.sql_database import sql_table

        resource = sql_table(credentials=_dlt_url(args), table=args.table, schema=args.schema,
                             backend=cast(Any, backend), chunk_size=DLT_CHUNK_ROWS,
                             reflection_level="full_with_precision")
        destination = dlt.destinations.filesystem(bucket_url=(spool / "dlt-out").as_uri())  # never loaded
        pipeline = dlt.pipeline(pipeline_name=f"bench_{backend.replace('-', '_')}",
                                pipelines_dir=str(spool / "dlt"), destination=destination,
                                dataset_name="bench")
        pipeline.extract(resource, loader_file_format="parquet")
        info: Any = pipeline.normalize()
        return sum(int(n) for name, n in info.row_counts.items() if not name.startswith("_dlt"))

    return run


def _dlt_url(args: argparse.Namespace) -> str:
    url = sa.make_url(args.url)
    driver = {"mysql": "mysql+mysqldb", "postgresql": "postgresql+psycopg2"}.get(args.dialect, url.drivername)
    return url.set(drivername=driver).render_as_string(hide_password=False)


PATHS: dict[str, Measured] = {
    "worker": worker_extract,
    "worker-measured": functools.partial(worker_extract, measured=True),
    "keys": worker_keys,
    "worker-ranges": worker_ranges,
    "naive": naive_loop,
    "raw": raw_fetch,
    "dlt-pyarrow": dlt_extract("pyarrow"),
    "dlt-connectorx": dlt_extract("connectorx"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("dialect")
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("table")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS)
    parser.add_argument("--part-rows", type=int, default=PART_ROWS)
    parser.add_argument("--readers", type=int, default=1, help="worker-ranges: key ranges read at once")
    parser.add_argument("--profile", help="write a cProfile of the measured part to this file")
    args = parser.parse_args(argv)
    if args.path.startswith("worker"):
        _import_the_worker()
    spool = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    try:
        result = _measure(PATHS[args.path], args, spool)
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


def _import_the_worker() -> None:
    """Import what a worker run uses before the clock starts: a long-running worker has it imported
    once per process (the paths import lazily, and their imports cost 0.35-0.4 s of a 1M-row run's
    CPU before this)."""
    import importlib

    for module in ("worker.quality", "worker.messages", "worker.sources", "worker.spool",
                   "worker.sources.mysql", "worker.sources.postgresql", "MySQLdb", "psycopg2",
                   "pyarrow.compute", "pyarrow.parquet"):
        try:
            importlib.import_module(module)
        except ImportError:  # a driver the bench does not use may be missing
            continue


def _measure(path: Measured, args: argparse.Namespace, spool: Path) -> dict[str, Any]:
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            rows = path(args, spool)
        profile.dump_stats(args.profile)
    else:
        rows = path(args, spool)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu  # every thread's CPU
    return {"rows": rows, "seconds": seconds, "cpu_s": cpu_s, "spool_part_bytes": max(_SPOOL_PEAK, default=0)}


if __name__ == "__main__":
    sys.exit(main())
