"""What Django can rely on in the events (docs/events.md): whether another delivery comes, the
dead-letter and replay events, expected rows and progress, the echoed context, commit times."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from devstack.schemas import SCHEMA_DIR
from tests.unit.stubs import Rig, delivery, request
from tests.unit.test_replay import FakePublisher, FakeQueue, body, letter
from worker.commands.replay import Selection, run_replay
from worker.errors import SourceAuthError, SourceConnectionError
from worker.events import ChunkProgress, Counters, MemoryEventBus, RunEvents
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.handlers.etl_run_requested import EtlRunRequestedHandler
from worker.messages import Event, RunDeadLettered, RunFailed, RunProgress, RunReplayed, RunStarted
from worker.sources.memory import Failure

POLICY = Redelivery(max_delivery_attempts=5, dead_letter_topic="etl-run-requested-dead-letter")


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def handle(rig: Rig, message: Delivery, redelivery: Redelivery = POLICY) -> Outcome:
    handler = EtlRunRequestedHandler(rig.runner(), rig.bus, 0, redelivery)
    return handler.handle(message, threading.Event())


def of_type(rig: Rig, kind: type[Event]) -> list[Event]:
    return [e for e in rig.bus.events if isinstance(e, kind)]


def fail_source(rig: Rig, error: Exception) -> None:
    rig.source.failures = [Failure(error, step="open")] * 3


@pytest.mark.parametrize(("attempt", "will_retry", "dead_lettered"), [(1, True, False), (4, True, False),
                                                                      (5, False, True)])
def test_a_transient_failure_says_whether_another_delivery_comes(
    rig: Rig, attempt: int, will_retry: bool, dead_lettered: bool
) -> None:
    fail_source(rig, SourceConnectionError("connection refused"))
    assert handle(rig, delivery(request(), attempt=attempt)) is Outcome.NACK
    (failed,) = of_type(rig, RunFailed)
    assert isinstance(failed, RunFailed)
    assert failed.will_retry is will_retry and failed.error.retryable is True
    letters = of_type(rig, RunDeadLettered)
    assert len(letters) == dead_lettered
    if dead_lettered:
        (letter_event,) = letters
        assert isinstance(letter_event, RunDeadLettered)
        assert letter_event.dead_letter_topic == POLICY.dead_letter_topic
        assert letter_event.error == failed.error and letter_event.seq == failed.seq + 1


def test_a_permanent_failure_never_retries_and_is_not_dead_lettered(rig: Rig) -> None:
    fail_source(rig, SourceAuthError("password authentication failed"))
    assert handle(rig, delivery(request(), attempt=5)) is Outcome.ACK
    (failed,) = of_type(rig, RunFailed)
    assert isinstance(failed, RunFailed) and failed.will_retry is False
    assert of_type(rig, RunDeadLettered) == []


def test_without_a_dead_letter_policy_a_transient_failure_always_retries(rig: Rig) -> None:
    fail_source(rig, SourceConnectionError("connection refused"))
    handle(rig, Delivery(data=delivery(request()).data, message_id="m", delivery_attempt=None),
           Redelivery())
    (failed,) = of_type(rig, RunFailed)
    assert isinstance(failed, RunFailed) and failed.will_retry is True


def test_the_one_shot_run_never_promises_another_delivery(rig: Rig) -> None:
    fail_source(rig, SourceConnectionError("connection refused"))
    handle(rig, delivery(request()), Redelivery(redelivers=False))
    (failed,) = of_type(rig, RunFailed)
    assert isinstance(failed, RunFailed) and failed.will_retry is False
    assert of_type(rig, RunDeadLettered) == []


def test_run_started_and_progress_carry_the_expected_rows_and_a_fraction(rig: Rig) -> None:
    handle(rig, delivery(request()))
    (started,) = of_type(rig, RunStarted)
    assert isinstance(started, RunStarted) and started.rows_expected == 10
    assert started.column_names == {"id": "id", "name": "name", "updated_at": "updated_at"}
    progress = [e for e in of_type(rig, RunProgress) if isinstance(e, RunProgress)]
    extracting = [p.fraction for p in progress if p.phase == "extracting"]
    assert extracting == [0.3, 0.6, 0.9, 1.0]  # batches of 3 of 10 rows
    assert [p.fraction for p in progress if p.phase == "committing"] == [1.0]
    assert {p.rows_expected for p in progress} == {10}


def test_a_chunked_catalog_run_s_progress_says_which_chunk_of_how_many() -> None:
    # A catalog run read in key chunks (worker/catalog_chunk_run.py); other runs leave both null
    bus = MemoryEventBus()
    events = RunEvents(bus, run_id="r", attempt=2, data_source_id=1, etl_run_id=None, dest_table="t",
                       load_type="catalog", progress_interval_s=0)
    events.progress(Counters(5, 5, 1), table="t", sub_window=ChunkProgress(2, 3))
    events.progress(Counters(6, 6, 2), table="t")
    chunked, plain = bus.events
    assert isinstance(chunked, RunProgress) and (chunked.chunk, chunked.chunks) == (2, 3)
    assert chunked.sub_window is None
    assert isinstance(plain, RunProgress) and (plain.chunk, plain.chunks) == (None, None)
    schema = json.loads((SCHEMA_DIR / "run.progress.json").read_text())
    assert {"chunk", "chunks"} <= set(schema["properties"])


def test_the_context_is_echoed_in_every_event_including_repeats(rig: Rig) -> None:
    context = {"job_id": 42, "env": "staging", "tags": ["a"]}
    handle(rig, delivery(request(etl_run_id=3, context=context)))
    handle(rig, delivery(request(etl_run_id=3, context=context), attempt=2))  # found committed
    assert rig.bus.events and all(e.context == context for e in rig.bus.events)
    assert rig.sink.ledger[0].context == context


def test_an_unreadable_request_still_echoes_its_context(rig: Rig) -> None:
    data = json.dumps({"data_source_id": 9, "context": {"job_id": 7}, "load_type": "nope"}).encode()
    handle(rig, delivery(data))
    assert [e.context for e in rig.bus.events] == [{"job_id": 7}]


def test_a_context_over_4_kib_is_refused() -> None:
    with pytest.raises(ValueError, match="context"):
        request(context={"blob": "x" * 5000})


def test_replay_publishes_run_replayed_after_the_republish_and_before_the_ack() -> None:
    queue = FakeQueue([letter("90", body(context={"job_id": 5}))])
    bus = MemoryEventBus()
    code = run_replay(queue, FakePublisher(queue), Selection(everything=True), dry_run=False,
                      out=io.StringIO(), events=bus)
    assert code == 0
    (event,) = bus.events
    assert isinstance(event, RunReplayed)
    assert (event.run_id, event.replay_of, event.replay_count, event.attempt) == ("etl-run-11", "90", 1, 5)
    assert event.context == {"job_id": 5} and event.etl_run_id == 11
    assert queue.log == [("publish", "90"), ("ack", "90")]
