"""The handler's decision table on the in-memory source and sink: which outcome (ack or nack) and
which events each kind of delivery gets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.unit.stubs import Rig, delivery, request
from worker.errors import (
    LoadError,
    PublishError,
    SourceAuthError,
    SourceConnectionError,
    SourceSchemaError,
)
from worker.events import event_id
from worker.handlers.base import Delivery, Outcome
from worker.ledger import LedgerEntry
from worker.messages import Event
from worker.sources.memory import Failure


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def handle(rig: Rig, message: Delivery) -> Outcome:
    return rig.handler().handle(message, threading.Event())


def terminal(rig: Rig) -> list[Event]:
    return [e for e in rig.bus.events if e.event_type in ("run.completed", "run.failed")]


def test_a_committed_run_is_acked_after_its_run_completed(rig: Rig) -> None:
    assert handle(rig, delivery(request(etl_run_id=5))) is Outcome.ACK
    assert [e.event_type for e in terminal(rig)] == ["run.completed"]
    assert terminal(rig)[0].run_id == "etl-run-5"


def test_a_redelivery_of_a_committed_run_is_acked_with_the_same_event(rig: Rig) -> None:
    handle(rig, delivery(request(etl_run_id=5)))
    assert handle(rig, delivery(request(etl_run_id=5), attempt=2)) is Outcome.ACK
    first, second = terminal(rig)
    assert first == second


@pytest.mark.parametrize(("failure", "outcome", "retryable"), [
    (SourceAuthError("password authentication failed"), Outcome.ACK, False),
    (SourceSchemaError("source table not found"), Outcome.ACK, False),
    (SourceConnectionError("connection refused"), Outcome.NACK, True),
    (RuntimeError("a bug"), Outcome.NACK, True),  # unknown: transient, so it ends in the dead letters
])
def test_a_failure_is_reported_then_acked_if_permanent_and_nacked_if_transient(
    rig: Rig, failure: Exception, outcome: Outcome, retryable: bool
) -> None:
    rig.source.failures = [Failure(failure, step="open")] * 3
    assert handle(rig, delivery(request())) is outcome
    (failed,) = terminal(rig)
    assert failed.event_type == "run.failed" and failed.error.retryable is retryable
    assert rig.sink.ledger == []


def test_run_failed_carries_the_failed_attempts_counters(rig: Rig) -> None:
    # Given a source that drops the connection after two batches on every try
    rig.source.failures = [Failure(SourceConnectionError("server closed"), after_batches=2)] * 3
    assert handle(rig, delivery(request())) is Outcome.NACK
    (failed,) = terminal(rig)
    assert (failed.rows_extracted, failed.batches_loaded) == (6, 2)  # batches of 3 rows


def test_an_unreadable_request_is_reported_and_acked(rig: Rig) -> None:
    assert handle(rig, delivery(b'{"data_source_id": 9, "etl_run_id": 41, "load_type": "catalog"}')) \
        is Outcome.ACK
    (failed,) = terminal(rig)
    assert failed.event_type == "run.failed" and failed.error.type == "MessageDecodeError"
    assert (failed.run_id, failed.data_source_id) == ("etl-run-41", 9)


def test_an_outcome_that_cannot_be_published_is_nacked(rig: Rig) -> None:
    def refuse(event: Event) -> None:
        raise PublishError("events topic unavailable")

    rig.bus.publish = refuse  # type: ignore[method-assign]  # this bus, and only it, now refuses
    assert handle(rig, delivery(request())) is Outcome.NACK


def test_a_reused_etl_run_id_fails_permanently_with_events_of_its_own(rig: Rig) -> None:
    # Given etl_run_id 5 committed a catalog run of products
    assert handle(rig, delivery(request(etl_run_id=5, source_table_name="products"))) is Outcome.ACK
    old_ids = {e.event_id for e in rig.bus.events}
    # When Django (after a reset) sends a transactional run of orders with the same etl_run_id
    later = request("transactional", etl_run_id=5)
    assert handle(rig, delivery(later, message_id="m-2")) is Outcome.ACK
    # Then it fails permanently, says what the id was used for, and Django cannot drop the event
    # as a duplicate of the old run's events
    failed = terminal(rig)[-1]
    assert failed.event_type == "run.failed" and failed.error.type == "RunIdConflictError"
    assert "products → bq_orders (catalog)" in failed.error.message
    assert failed.error.retryable is False
    assert failed.event_id not in old_ids
    assert len(rig.sink.ledger) == 1 and len(rig.sink.tables["bq_orders"]) == 0
    # And a redelivery of the same message repeats the same event (same id: deduplicated)
    handle(rig, delivery(later, message_id="m-2"))
    assert terminal(rig)[-1].event_id == failed.event_id


def test_ordinary_event_ids_stay_a_function_of_run_attempt_and_seq(rig: Rig) -> None:
    handle(rig, delivery(request(etl_run_id=5)))
    assert [e.event_id for e in rig.bus.events] == [
        event_id("etl-run-5", 1, e.seq) for e in rig.bus.events]


def test_a_sink_failure_during_the_commit_is_nacked_with_nothing_applied(rig: Rig) -> None:
    def down(entry: LedgerEntry) -> None:
        raise LoadError("BigQuery unavailable")

    rig.sink.before_commit = down
    assert handle(rig, delivery(request())) is Outcome.NACK
    assert rig.sink.ledger == [] and rig.sink.tables["bq_orders"] == []
