"""Event numbering and ids, run identity, and redaction of secrets in logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from worker.errors import SourceAuthError
from worker.events import Counters, MemoryEventBus, RunEvents
from worker.handlers.base import Delivery
from worker.handlers.etl_run_requested import run_id_for
from worker.ledger import LedgerEntry
from worker.logs import REDACTOR, JsonFormatter, log_context, redact
from worker.messages import decode_request


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_events(bus: MemoryEventBus, clock: FakeClock, attempt: int = 1) -> RunEvents:
    return RunEvents(bus, run_id="etl-run-1", attempt=attempt, data_source_id=3, etl_run_id=1,
                     dest_table="t", load_type="transactional", progress_interval_s=5.0, clock=clock)


def entry() -> LedgerEntry:
    return LedgerEntry(
        run_id="etl-run-1", data_source_id=3, etl_run_id=1, dest_table="t", load_type="transactional",
        window_column="ts", window_low="2024-01-01T00:00:00.000000+00:00",
        window_high="2024-02-01T00:00:00.000000+00:00", rows_extracted=5, rows_loaded=5,
        batches_loaded=1, source_row_count=5, attempt=1, completed_seq=4, staging_token="abc",
        started_at=datetime(2024, 2, 1, tzinfo=UTC), committed_at=datetime(2024, 2, 1, 0, 1, tzinfo=UTC),
        duration_seconds=60.0)


def test_progress_is_rate_limited_and_seq_increases() -> None:
    bus, clock = MemoryEventBus(), FakeClock()
    events = make_events(bus, clock)
    events.started("postgresql", "public.t")
    for step in range(10):
        clock.now = step * 1.0  # one batch a second, interval 5 s
        events.progress(Counters(rows_extracted=step))
    events.progress(Counters(rows_extracted=10), phase="committing", force=True)
    kinds = [(e.event_type, e.seq) for e in bus.events]
    # one progress event in 10 s of batches (at 5 s), then the forced one before the commit
    assert kinds == [("run.started", 1), ("run.progress", 2), ("run.progress", 3)]
    assert [e.rows_extracted for e in bus.events[1:]] == [5, 10]


def test_completed_event_is_identical_whichever_delivery_publishes_it() -> None:
    first_bus, second_bus = MemoryEventBus(), MemoryEventBus()
    make_events(first_bus, FakeClock(), attempt=1).completed(entry())
    later = make_events(second_bus, FakeClock(), attempt=3)
    later.started("postgresql", "t")
    later.completed(entry())
    assert first_bus.events[0] == second_bus.events[1]
    completed = first_bus.events[0]
    assert completed.event_type == "run.completed"
    assert (completed.seq, completed.attempt) == (4, 1)
    assert completed.watermark == "2024-02-01T00:00:00.000000+00:00"


def test_failed_event_redacts_registered_secrets() -> None:
    bus = MemoryEventBus()
    REDACTOR.register("s3cr3t-pw")
    make_events(bus, FakeClock()).failed(SourceAuthError("login u/s3cr3t-pw refused"), Counters())
    failed = bus.events[0]
    assert "s3cr3t-pw" not in failed.model_dump_json()
    assert failed.event_type == "run.failed"
    assert failed.error.type == "SourceAuthError" and failed.error.retryable is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pa55word@host/db", "postgresql://user:***@host/db"),
        ("password=abc123 host=x", "password=*** host=x"),
        ("nothing secret", "nothing secret"),
    ],
)
def test_redaction_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_json_log_lines_carry_labels_and_no_secret() -> None:
    REDACTOR.register("topsecret99")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pw %s", ("topsecret99",), None)
    with log_context(run_id="r1", message_id="m1"):
        from worker.logs import _ContextFilter

        _ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["severity"] == "INFO" and line["message"] == "pw ***"
    assert line["logging.googleapis.com/labels"] == {"run_id": "r1", "message_id": "m1"}


def test_run_id_is_stable_across_redelivery_and_replay() -> None:
    body = (b'{"data_source_id":1,"source_type":"sqlite","connection_params":{"database":"x"},'
            b'"source_table_name":"t","dest_table_name":"d","load_type":"catalog"}')
    request = decode_request(body)
    assert run_id_for(request.etl_run_id, Delivery(body, "42")) == "msg-42"
    assert run_id_for(request.etl_run_id, Delivery(body, "99", {"run_id": "msg-42"})) == "msg-42"
    assert run_id_for(request.etl_run_id, Delivery(body, "99", {"run_id": "bad id; drop"})) == "msg-99"
    with_id = decode_request(body.replace(b'"data_source_id":1', b'"data_source_id":1,"etl_run_id":5'))
    assert run_id_for(with_id.etl_run_id, Delivery(body, "42", {"run_id": "other"})) == "etl-run-5"
