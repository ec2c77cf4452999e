"""Jobs on the in-memory source and sink: several tables read in one snapshot and applied in one
commit, all or nothing; one run.completed listing every table; exactly once across redeliveries;
a run id belongs to one set of tables."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.stubs import T0, Rig, delivery, job_request
from worker.errors import DataQualityError, RunIdConflictError, SourceConnectionError, VerificationError
from worker.events import RunEvents
from worker.handlers.base import Outcome
from worker.messages import EtlRunRequest, RunCompleted, RunFailed, RunProgress, RunStarted
from worker.sources.memory import Failure, MemoryTable, column

CUSTOMERS = (column("id", "INT64"), column("name", "STRING"), column("updated_at", "TIMESTAMP"))
LINES = (column("id", "INT64"), column("customer_id", "INT64"), column("updated_at", "TIMESTAMP"))


def customer(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"c{i}", "updated_at": T0 + timedelta(minutes=i)}


def line(i: int, customer_id: int) -> dict[str, Any]:
    return {"id": i, "customer_id": customer_id, "updated_at": T0 + timedelta(minutes=i)}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    rig = Rig(tmp_path)
    rig.source.tables["customers"] = MemoryTable(CUSTOMERS, [customer(i) for i in range(1, 4)],
                                                 primary_key=("id",))
    rig.source.tables["lines"] = MemoryTable(LINES, [line(i, 1 + i % 3) for i in range(1, 7)])
    return rig


CUSTOMERS_TABLE = {"source_table_name": "customers", "dest_table_name": "bq_customers", "load_type": "merge",
                   "timestamp_column": "updated_at"}
ORDERS_TABLE = {"source_table_name": "orders", "dest_table_name": "bq_orders", "load_type": "catalog"}
LINES_TABLE = {"source_table_name": "lines", "dest_table_name": "bq_lines", "load_type": "transactional",
               "timestamp_column": "updated_at"}


def shop_job(**third: Any) -> EtlRunRequest:
    """customers (merge), orders (catalog), lines (transactional, with `third`'s fields)."""
    return job_request(CUSTOMERS_TABLE, ORDERS_TABLE, {**LINES_TABLE, **third})


def events(rig: Rig, run_id: str, attempt: int = 1) -> RunEvents:
    """A job's events as the handler makes them: no one destination or load type at the top."""
    return RunEvents(rig.bus, run_id=run_id, attempt=attempt, data_source_id=7, etl_run_id=None,
                     dest_table=None, load_type=None, progress_interval_s=0)


def completions(rig: Rig, run_id: str) -> list[RunCompleted]:
    return [e for e in rig.of(run_id) if isinstance(e, RunCompleted)]


def destinations(rig: Rig) -> dict[str, list[dict[str, Any]]]:
    return {name: sorted(rows, key=lambda r: r["id"]) for name, rows in rig.sink.tables.items()}


def test_a_job_commits_every_table_once_in_one_commit_and_reports_each(rig: Rig) -> None:
    result = rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    # Then every destination holds its table, read in ONE snapshot and applied by ONE commit
    assert result.applied_now and rig.source.snapshots_opened == 1
    assert destinations(rig)["bq_customers"] == rig.source.tables["customers"].rows
    assert destinations(rig)["bq_orders"] == rig.orders.rows
    assert destinations(rig)["bq_lines"] == rig.source.tables["lines"].rows
    # And the ledger has one row per table, in job order, written together
    assert [(e.run_id, e.dest_table, e.table_index) for e in rig.sink.ledger] == [
        ("job-1", "bq_customers", 0), ("job-1", "bq_orders", 1), ("job-1", "bq_lines", 2)]
    assert len({(e.completed_seq, e.attempt, e.started_at) for e in rig.sink.ledger}) == 1
    # And one run.completed lists each table's counters, window and watermark
    (completed,) = completions(rig, "job-1")
    assert [(t.dest_table, t.load_type, t.rows_loaded) for t in completed.tables] == [
        ("bq_customers", "merge", 3), ("bq_orders", "catalog", 10), ("bq_lines", "transactional", 6)]
    lines = completed.tables[2]
    assert lines.watermark == lines.window_high == rig.sink.ledger[2].window_high is not None
    assert completed.tables[1].watermark is None  # a catalog table has no watermark
    assert (completed.rows_loaded, completed.source_row_count, completed.dest_table) == (19, 19, None)
    assert completed.watermark is None and completed.quality is None
    assert all(staging.dropped for staging in rig.sink.stagings)


def test_a_quality_failure_in_the_third_table_commits_no_table(rig: Rig) -> None:
    # Given a first job committed every table
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    before, ledger = destinations(rig), list(rig.sink.ledger)
    # And every source table changed since
    rig.source.tables["customers"].rows.append(customer(9))
    rig.orders.rows.pop()
    rig.source.tables["lines"].rows.append(line(9, 9) | {"updated_at": T0 + timedelta(days=1, minutes=1)})
    rig.clock.now += timedelta(hours=1)
    # When the next job's third table breaks a rule that fails
    with pytest.raises(DataQualityError, match="table bq_lines: quality rule min_rows"):
        rig.runner().run(shop_job(quality_rules=[{"rule": "min_rows", "value": 5}]), "job-2",
                         events(rig, "job-2"))
    # Then no destination changed, and the ledger did not either
    assert destinations(rig) == before and rig.sink.ledger == ledger
    assert all(staging.dropped for staging in rig.sink.stagings)


def test_a_staging_that_does_not_verify_in_one_table_commits_no_table(rig: Rig) -> None:
    # Given every table staged, the second one short of a row when its commit checks it
    run = rig.runner()
    stagings = rig.sink.stagings

    def lose_a_row_of_orders(entry: object) -> None:
        next(s for s in stagings if s.dest_table == "bq_orders").rows.pop()

    rig.sink.before_commit = lose_a_row_of_orders
    # When the job commits, the commit refuses it as a whole
    with pytest.raises(VerificationError, match="staging holds 9 rows, 10 were extracted"):
        run.run(shop_job(), "job-1", events(rig, "job-1"))
    assert all(rows == [] for rows in rig.sink.tables.values()) and rig.sink.ledger == []


def test_a_redelivered_job_reports_the_same_completion_and_loads_nothing(rig: Rig) -> None:
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    before = destinations(rig)
    again = rig.runner().run(shop_job(), "job-1", events(rig, "job-1", attempt=2))
    assert not again.applied_now and [e.dest_table for e in again.entries] == [
        "bq_customers", "bq_orders", "bq_lines"]
    assert destinations(rig) == before and len(rig.sink.ledger) == 3
    first, repeat = completions(rig, "job-1")
    assert first == repeat
    assert rig.source.snapshots_opened == 1  # the redelivery never read the source


@pytest.mark.parametrize("other", [
    job_request(CUSTOMERS_TABLE, ORDERS_TABLE),  # a table fewer
    job_request(CUSTOMERS_TABLE, ORDERS_TABLE, {**LINES_TABLE, "dest_table_name": "bq_other"}),
    job_request(CUSTOMERS_TABLE, ORDERS_TABLE, {**LINES_TABLE, "load_type": "catalog",
                                                "timestamp_column": None}),
    job_request(CUSTOMERS_TABLE, ORDERS_TABLE, LINES_TABLE, data_source_id=8),
])
def test_a_run_id_used_by_another_set_of_tables_is_refused(rig: Rig, other: EtlRunRequest) -> None:
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    before = destinations(rig)
    with pytest.raises(RunIdConflictError) as raised:
        rig.runner().run(other, "job-1", events(rig, "job-1", 2))
    assert ("run of data source 7: customers → bq_customers (merge), lines → bq_lines (transactional), "
            "orders → bq_orders (catalog) (committed at") in str(raised.value)
    assert destinations(rig) == before and len(rig.sink.ledger) == 3


def test_the_same_tables_listed_in_another_order_are_the_same_job(rig: Rig) -> None:
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    reordered = job_request(LINES_TABLE, CUSTOMERS_TABLE, ORDERS_TABLE)
    assert not rig.runner().run(reordered, "job-1", events(rig, "job-1", 2)).applied_now


def test_every_table_is_read_in_the_snapshot_taken_when_the_job_started(rig: Rig) -> None:
    # Given a writer that commits a customer and its line while the job reflects each table
    customers, lines = rig.source.tables["customers"], rig.source.tables["lines"]

    def writer(table: str) -> None:
        n = 100 + len(customers.rows)
        customers.rows.append(customer(n))
        lines.rows.append(line(n, n))

    rig.source.on_table = writer
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    # Then none of those rows was read, in any table: every line has its customer
    loaded = destinations(rig)
    assert {r["id"] for r in loaded["bq_customers"]} == {1, 2, 3}
    assert {r["customer_id"] for r in loaded["bq_lines"]} <= {r["id"] for r in loaded["bq_customers"]}


def test_a_source_failure_in_the_second_table_retries_the_whole_job(rig: Rig) -> None:
    # customers are one batch of 3 rows; the connection drops after the first batch of orders
    rig.source.failures = [Failure(SourceConnectionError("server closed the connection"), after_batches=2)]
    result = rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    assert result.applied_now and rig.source.snapshots_opened == 2
    assert destinations(rig)["bq_orders"] == rig.orders.rows  # the first try's rows were never committed
    assert len(rig.sink.ledger) == 3


def test_a_job_publishes_per_table_starts_and_progress_then_one_outcome(rig: Rig) -> None:
    assert rig.handler().handle(delivery(shop_job(), "m-1"), threading.Event()) is Outcome.ACK
    job = rig.of("msg-m-1")
    started = [e for e in job if isinstance(e, RunStarted)]
    assert [(e.table, e.source_table, e.rows_expected) for e in started] == [
        ("bq_customers", "customers", 3), ("bq_orders", "orders", 10), ("bq_lines", "lines", 6)]
    assert {(e.dest_table, e.load_type) for e in job} == {(None, None)}  # the job's envelope
    progress = [e for e in job if isinstance(e, RunProgress)]
    extracting = [(p.table, p.rows_extracted, p.fraction) for p in progress if p.phase == "extracting"]
    assert extracting[0] == ("bq_customers", 3, 1.0) and extracting[-1] == ("bq_lines", 6, 1.0)
    assert [(p.table, p.rows_extracted, p.rows_expected) for p in progress if p.phase == "committing"] == [
        (None, 19, 19)]
    assert [e.event_type for e in job][-1] == "run.completed"
    assert [e.seq for e in job] == list(range(1, len(job) + 1))


def test_a_failed_job_reports_the_counters_of_every_table_read(rig: Rig) -> None:
    # Given a source that drops the connection in the second table on every try
    rig.source.failures = [Failure(SourceConnectionError("server closed"), after_batches=3)] * 3
    assert rig.handler().handle(delivery(shop_job(), "m-1"), threading.Event()) is Outcome.NACK
    (failed,) = [e for e in rig.of("msg-m-1") if isinstance(e, RunFailed)]
    assert (failed.rows_extracted, failed.batches_loaded) == (3 + 6, 3)  # batches of 3 rows


def test_a_one_table_job_reports_its_table_at_the_top_and_in_tables(rig: Rig) -> None:
    result = rig.runner().run(job_request(ORDERS_TABLE), "job-1", rig.events("job-1"))
    (completed,) = completions(rig, "job-1")
    (table,) = completed.tables
    assert (completed.dest_table, completed.rows_loaded, completed.quality) == (
        table.dest_table, table.rows_loaded, table.quality)
    assert dataclasses.asdict(result.entry)["table_index"] == 0


def test_a_job_passes_the_crash_points_of_every_table_and_of_its_one_commit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the fault suite's crash points recorded instead of killing the worker
    passed: list[str] = []
    for module in ("worker.runner", "worker.table_run"):
        monkeypatch.setattr(f"{module}.crash_point", passed.append)
    rig.runner().run(shop_job(), "job-1", events(rig, "job-1"))
    # Then each table passes the extraction and staging points (a batch of 3 rows each, a part of
    # 4 rows each), then table_staged; the job passes its commit points once, after every table
    *tables, commit = "|".join(passed).split("|table_staged|")
    assert commit.split("|") == ["before_commit", "after_commit"]
    counts = [{phase: table.split("|").count(phase) for phase in ("extraction_started", "part_written",
                                                                  "staging_loaded")} for table in tables]
    assert counts == [
        {"extraction_started": 1, "part_written": 1, "staging_loaded": 1},  # customers: 3 rows
        {"extraction_started": 4, "part_written": 3, "staging_loaded": 3},  # orders: 10 rows
        {"extraction_started": 2, "part_written": 2, "staging_loaded": 2},  # lines: 6 rows
    ]
