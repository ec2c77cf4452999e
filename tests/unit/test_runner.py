"""The runner's steps on the in-memory source and sink: plan, extract and stage, verify, commit,
report; the re-plan loop, the source-only retries and the run-id check."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.stubs import ORDERS_COLUMNS, T0, Rig, order, request
from worker.errors import (
    ConfigurationError,
    LoadError,
    RunIdConflictError,
    RunTimeoutError,
    SchemaMismatchError,
    ShutdownInterrupted,
    SourceConnectionError,
    SupersededError,
    VerificationError,
)
from worker.ledger import LedgerEntry
from worker.messages import EtlRunRequest
from worker.runner import MAX_REPLANS
from worker.sources.memory import Failure, MemorySnapshot, MemoryTable, column


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_catalog_run_commits_every_row_once_and_reports_it(rig: Rig) -> None:
    result = rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert result.applied_now
    assert rig.sink.tables["bq_orders"] == rig.orders.rows
    assert [e.run_id for e in rig.sink.ledger] == ["run-1"]
    kinds = [e.event_type for e in rig.of("run-1")]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    completed = rig.of("run-1")[-1]
    assert (completed.rows_extracted, completed.rows_loaded, completed.source_row_count) == (10, 10, 10)
    assert completed.batches_loaded == 4  # batches of 3 rows
    assert all(staging.dropped for staging in rig.sink.stagings)


def test_the_same_run_again_reports_the_committed_run_and_loads_nothing(rig: Rig) -> None:
    rig.runner().run(request(), "run-1", rig.events("run-1"))
    again = rig.runner().run(request(), "run-1", rig.events("run-1", attempt=2))
    assert not again.applied_now
    assert len(rig.sink.tables["bq_orders"]) == 10 and len(rig.sink.ledger) == 1
    completions = [e for e in rig.of("run-1") if e.event_type == "run.completed"]
    assert len(completions) == 2 and completions[0] == completions[1]
    assert rig.source.snapshots_opened == 1  # the second delivery never read the source


@pytest.mark.parametrize(("load_type", "other"), [
    ("catalog", {"source_table_name": "products"}),
    ("catalog", {"dest_table_name": "bq_products"}),
    ("transactional", {}),
    ("catalog", {"data_source_id": 8}),
])
def test_a_run_id_used_by_another_table_or_mode_is_refused_and_nothing_is_loaded(
    rig: Rig, load_type: str, other: dict[str, object]
) -> None:
    # Given run-1 committed as a catalog run of orders → bq_orders
    rig.runner().run(request(), "run-1", rig.events("run-1"))
    before = dict(rig.sink.tables)
    # When another request arrives with the same run id (a reused etl_run_id)
    with pytest.raises(RunIdConflictError) as raised:
        rig.runner().run(request(load_type, **other), "run-1", rig.events("run-1", 2))
    # Then it is refused, saying what the id was used for, and nothing changed
    assert "data source 7: orders → bq_orders (catalog)" in str(raised.value)
    assert rig.sink.tables == before and len(rig.sink.ledger) == 1
    assert rig.source.snapshots_opened == 1


def test_a_ledger_row_without_a_source_table_still_matches_its_own_request(rig: Rig) -> None:
    rig.runner().run(request(), "run-1", rig.events("run-1"))
    rig.sink.ledger[0] = dataclasses.replace(rig.sink.ledger[0], source_table=None)  # an older row
    assert not rig.runner().run(request(), "run-1", rig.events("run-1", 2)).applied_now


def test_a_run_id_taken_by_another_run_during_the_commit_is_refused(rig: Rig) -> None:
    # Given another request with the same run id commits while this one stages
    def concurrent(entry: LedgerEntry) -> None:
        rig.sink.before_commit = None
        rig.sink.ledger.append(dataclasses.replace(entry, source_table="products", staging_token="x"))

    rig.sink.before_commit = concurrent
    with pytest.raises(RunIdConflictError):
        rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert rig.sink.tables["bq_orders"] == []


def test_transactional_windows_touch_and_each_row_loads_once(rig: Rig) -> None:
    first = rig.runner().run(request("transactional"), "run-1", rig.events("run-1")).entry
    rig.orders.rows.append(order(11, minutes=60 * 24 + 5))  # after the first window's high
    rig.clock.now += timedelta(hours=1)
    second = rig.runner().run(request("transactional"), "run-2", rig.events("run-2")).entry
    assert second.window_low == first.window_high  # from the ledger, not the request
    assert (first.rows_loaded, second.rows_loaded) == (10, 1)
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 12))


def test_an_overtaken_window_is_planned_again_from_the_new_high(rig: Rig) -> None:
    # Given a concurrent run that commits [T0, T0 + 5 min) just before this run's commit
    runner = rig.runner()

    def concurrent(entry: LedgerEntry) -> None:
        rig.sink.before_commit = None
        high = T0 + timedelta(minutes=5)
        rig.sink.ledger.append(dataclasses.replace(
            entry, run_id="other", window_low=None, window_low_key=None,
            window_high=high.isoformat(timespec="microseconds"),
            window_high_key=high.isoformat(timespec="microseconds"), staging_token="y"))
        rig.sink.tables["bq_orders"].extend(r for r in rig.orders.rows if r["updated_at"] < high)

    rig.sink.before_commit = concurrent
    result = runner.run(request("transactional"), "run-1", rig.events("run-1"))
    # Then the run re-planned from the concurrent run's high: every row once
    assert result.entry.window_low == (T0 + timedelta(minutes=5)).isoformat(timespec="microseconds")
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == list(range(1, 11))
    assert rig.source.snapshots_opened == 2


def test_a_run_overtaken_more_than_the_replan_limit_is_superseded(rig: Rig) -> None:
    def always_overtaken(entry: LedgerEntry) -> None:
        raise SupersededError("an overlapping window of this table is already committed")

    rig.sink.before_commit = always_overtaken
    with pytest.raises(SupersededError):
        rig.runner().run(request("transactional"), "run-1", rig.events("run-1"))
    assert rig.source.snapshots_opened == MAX_REPLANS + 1


def test_an_overtaken_catalog_run_is_not_planned_again(rig: Rig) -> None:
    def newer(entry: LedgerEntry) -> None:
        raise SupersededError("a newer snapshot of this table is already committed")

    rig.sink.before_commit = newer
    with pytest.raises(SupersededError):
        rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert rig.source.snapshots_opened == 1


def test_a_source_failure_mid_stream_retries_the_whole_attempt(rig: Rig) -> None:
    rig.source.failures = [Failure(SourceConnectionError("server closed the connection"), after_batches=2)]
    result = rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert result.applied_now and rig.source.snapshots_opened == 2
    assert rig.sink.tables["bq_orders"] == rig.orders.rows  # the first try's rows were never committed


def test_source_failures_give_up_after_the_retry_limit(rig: Rig) -> None:
    rig.source.failures = [Failure(SourceConnectionError("refused"), step="open")] * 3
    with pytest.raises(SourceConnectionError):
        rig.runner(max_tries=3).run(request(), "run-1", rig.events("run-1"))
    assert rig.source.snapshots_opened == 3 and rig.sink.ledger == []


def test_a_sink_failure_is_not_retried_by_the_runner(rig: Rig) -> None:
    def down(entry: LedgerEntry) -> None:
        raise LoadError("BigQuery unavailable")

    rig.sink.before_commit = down
    with pytest.raises(LoadError):
        rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert rig.source.snapshots_opened == 1  # the sink retries its own calls; the runner does not


def test_rows_lost_in_staging_fail_the_verify_step_and_commit_nothing(rig: Rig) -> None:
    rig.sink.lose_rows = 1
    with pytest.raises(VerificationError, match="COUNT"):
        rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert rig.sink.ledger == [] and rig.sink.tables["bq_orders"] == []
    assert all(staging.dropped for staging in rig.sink.stagings)


def test_a_run_past_its_time_limit_stops_before_committing(rig: Rig) -> None:
    with pytest.raises(RunTimeoutError):
        rig.runner(max_run_s=-1).run(request(), "run-1", rig.events("run-1"))
    assert rig.sink.ledger == []


def test_a_shutdown_interrupts_the_run_before_committing(rig: Rig) -> None:
    interrupt = threading.Event()
    interrupt.set()
    with pytest.raises(ShutdownInterrupted):
        rig.runner().run(request(), "run-1", rig.events("run-1"), interrupt)
    assert rig.sink.ledger == []


# --- merge ---------------------------------------------------------------------------------------
def merge_request(**overrides: object) -> EtlRunRequest:
    return request("merge", timestamp_column="updated_at", **overrides)


def test_a_merge_run_updates_changed_rows_in_place_and_inserts_new_ones(rig: Rig) -> None:
    rig.orders.primary_key = ("id",)
    rig.runner().run(merge_request(), "run-1", rig.events("run-1"))
    # Given row 3 changed and row 11 appeared after the first window
    rig.orders.rows[2] = {**order(3, minutes=60 * 24 + 5), "name": "changed"}
    rig.orders.rows.append(order(11, minutes=60 * 24 + 6))
    rig.clock.now += timedelta(hours=1)
    second = rig.runner().run(merge_request(), "run-2", rig.events("run-2")).entry
    # Then each key is there once, with its newest version
    rows = sorted(rig.sink.tables["bq_orders"], key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(1, 12))
    assert rows[2]["name"] == "changed" and second.rows_loaded == 2


def test_a_merge_run_deletes_soft_deleted_rows(rig: Rig) -> None:
    rig.orders = MemoryTable((*ORDERS_COLUMNS, column("deleted", "BOOL")),
                             [{**order(i), "deleted": None} for i in (1, 2)], primary_key=("id",))
    rig.source.tables["orders"] = rig.orders
    rig.runner().run(merge_request(soft_delete_column="deleted"), "run-1", rig.events("run-1"))
    rig.orders.rows[0] = {**order(1, minutes=60 * 24 + 1), "deleted": True}
    rig.clock.now += timedelta(hours=1)
    rig.runner().run(merge_request(soft_delete_column="deleted"), "run-2", rig.events("run-2"))
    assert [r["id"] for r in rig.sink.tables["bq_orders"]] == [2]


def test_reconcile_deletes_rows_gone_from_the_source_in_the_same_commit(rig: Rig) -> None:
    rig.orders.primary_key = ("id",)
    rig.runner().run(merge_request(reconcile_deletes=True), "run-1", rig.events("run-1"))
    del rig.orders.rows[3:5]  # ids 4 and 5 hard-deleted
    rig.clock.now += timedelta(hours=1)
    entry = rig.runner().run(merge_request(reconcile_deletes=True), "run-2", rig.events("run-2")).entry
    assert sorted(r["id"] for r in rig.sink.tables["bq_orders"]) == [1, 2, 3, 6, 7, 8, 9, 10]
    assert entry.keys_extracted == 8 and entry.rows_loaded == 0


def test_a_merge_of_a_table_without_a_primary_key_fails_before_staging(rig: Rig) -> None:
    with pytest.raises(ConfigurationError, match="primary_key"):
        rig.runner().run(merge_request(), "run-1", rig.events("run-1"))
    assert rig.sink.stagings == []
    rig.runner().run(merge_request(primary_key=["id"]), "run-2", rig.events("run-2"))
    assert len(rig.sink.tables["bq_orders"]) == 10


def test_windows_chain_from_transactional_to_merge(rig: Rig) -> None:
    first = rig.runner().run(request("transactional"), "run-1", rig.events("run-1")).entry
    rig.clock.now += timedelta(hours=1)
    second = rig.runner().run(merge_request(primary_key=["id"]), "run-2", rig.events("run-2")).entry
    assert second.window_low == first.window_high


def test_a_staging_that_cannot_be_prepared_fails_the_run_with_its_own_error_and_commits_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a destination whose staging cannot be opened (prepared on its own thread)
    def refuse(*args: object, **kwargs: object) -> None:
        raise SchemaMismatchError("bq_orders.id is STRING, the source sends INT64")

    monkeypatch.setattr(rig.sink, "open_staging", refuse)
    # Then the run fails with that error, not a wrapper, and nothing is committed
    with pytest.raises(SchemaMismatchError, match="STRING"):
        rig.runner().run(request(), "run-1", rig.events("run-1"))
    assert rig.sink.ledger == [] and rig.sink.tables.get("bq_orders", []) == []


def test_staging_is_prepared_while_the_source_streams_and_waited_for_before_loading(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a staging that opens only once the source has streamed its first batch
    first_batch = threading.Event()
    opened_after_batch: list[bool] = []
    real_open, real_iter = rig.sink.open_staging, MemorySnapshot.iter_batches

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        opened_after_batch.append(first_batch.wait(timeout=10))
        return real_open(*args, **kwargs)

    def streaming(self: MemorySnapshot, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in real_iter(self, *args, **kwargs):
            first_batch.set()
            yield batch

    monkeypatch.setattr(rig.sink, "open_staging", slow_open)
    monkeypatch.setattr(MemorySnapshot, "iter_batches", streaming)
    # When the run goes through
    result = rig.runner().run(request(), "run-1", rig.events("run-1"))
    # Then extraction did not wait for the staging, and every row was still loaded into it, once
    assert opened_after_batch == [True]
    assert result.entry.rows_loaded == 10 and len(rig.sink.tables["bq_orders"]) == 10
    assert all(staging.dropped for staging in rig.sink.stagings)
