"""`etl-run-requested`: decode, run, and turn the result into ack or nack.

The handler is the only place that decides a message's fate:
- committed (now or earlier) and `run.completed` published → ack;
- permanent error, reported in `run.failed` → ack (retrying cannot help);
- transient error → `run.failed` (retryable) → nack, so Pub/Sub's retry and dead-letter policies act;
- an event that cannot be published → nack (the outcome is not durable yet).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from typing import Any

from worker import constants as c
from worker import tracing
from worker.classify import classify
from worker.errors import EtlError, MessageDecodeError, RunIdConflictError
from worker.events import EventBus, RunEvents
from worker.handlers.base import Delivery, Outcome, Redelivery
from worker.logs import REDACTOR, log_context, redact
from worker.messages import MAX_CONTEXT_BYTES, EtlRunRequest, decode_request
from worker.modes import MODE_NAMES
from worker.runner import Runner

log = logging.getLogger(__name__)
_RUN_ID_ATTR = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def run_id_for(etl_run_id: int | None, delivery: Delivery) -> str:
    """Stable across redelivery and dead-letter replay.

    Django's etl_run_id when present; else a `run_id` attribute (set by `replay` and by publishers
    that want their own id); else the id of the message as first published (Pub/Sub keeps the id
    on redelivery; `replay` carries it in the `run_id` attribute).
    """
    if etl_run_id is not None:
        return f"etl-run-{etl_run_id}"
    attribute = delivery.attributes.get(c.ATTR_RUN_ID, "")
    if _RUN_ID_ATTR.match(attribute):
        return attribute
    return f"msg-{delivery.message_id}"


class EtlRunRequestedHandler:
    def __init__(self, runner: Runner, bus: EventBus, progress_interval_s: float,
                 redelivery: Redelivery | None = None) -> None:
        self._runner = runner
        self._redelivery = redelivery or Redelivery()
        self._bus = bus
        self._progress_interval_s = progress_interval_s

    def handle(self, delivery: Delivery, interrupt: threading.Event) -> Outcome:
        try:
            request = decode_request(delivery.data)
        except MessageDecodeError as exc:
            return self._reject(delivery, exc)
        if request.connection_params.password is not None:
            REDACTOR.register(request.connection_params.password.get_secret_value())
        run_id = run_id_for(request.etl_run_id, delivery)
        with (
            log_context(run_id=run_id, message_id=delivery.message_id,
                        data_source_id=request.data_source_id, attempt=delivery.attempt),
            tracing.run_span(delivery.attributes, run_id=run_id, attempt=delivery.attempt,
                             data_source_id=request.data_source_id, tables=len(request.table_specs())),
        ):
            return self._run(delivery, request, run_id, interrupt)

    def _run(self, delivery: Delivery, request: EtlRunRequest, run_id: str,
             interrupt: threading.Event) -> Outcome:
        log.info("run %s received: %s %s (%s)", run_id, request.source_type, request.describe_tables(),
                 ", ".join(spec.load_type for spec in request.table_specs()))
        events = self._request_events(run_id, delivery, request)
        try:
            self._runner.run(request, run_id, events, interrupt)
            return Outcome.ACK
        except Exception as exc:
            error = classify(exc)
            log.error("run %s failed: %s: %s", run_id, error.type_name, redact(str(error)),
                      exc_info=not isinstance(exc, EtlError))
            if isinstance(error, RunIdConflictError):
                # Another request's events: ids of their own, or Django drops them as duplicates
                # of the committed run's events.
                events = self._request_events(run_id, delivery, request, id_salt=_digest(delivery.data))
            return self._report_failure(events, error, delivery)

    def _request_events(self, run_id: str, delivery: Delivery, request: EtlRunRequest,
                        id_salt: str = "") -> RunEvents:
        return self._events(run_id, delivery.attempt, request.data_source_id, request.etl_run_id,
                            request.dest_table_name, request.load_type, id_salt=id_salt,
                            context=request.context)

    def _reject(self, delivery: Delivery, error: MessageDecodeError) -> Outcome:
        hints = _best_effort_ids(delivery.data)
        run_id = run_id_for(hints["etl_run_id"], delivery)
        with log_context(run_id=run_id, message_id=delivery.message_id):
            log.error("request rejected: %s", redact(str(error)))
            events = self._events(run_id, delivery.attempt, **hints)
            return self._report_failure(events, error, delivery)

    def _report_failure(self, events: RunEvents, error: EtlError, delivery: Delivery) -> Outcome:
        """Publish run.failed with the failed attempt's counters (none before a run started) and
        whether another delivery will come; on the last delivery of a transient failure, also
        run.dead_lettered (the nack sends the request to the dead-letter topic)."""
        last = self._redelivery.is_last(delivery)
        dead_letter_topic = self._redelivery.dead_letter_topic
        try:
            events.failed(error, will_retry=error.retryable and not last)
            if error.retryable and last and self._redelivery.redelivers and dead_letter_topic:
                log.error("delivery %d was the last: the request goes to %s", delivery.delivery_attempt or 0,
                          dead_letter_topic)
                events.dead_lettered(error, dead_letter_topic)
        except Exception as exc:  # not durable: let Pub/Sub deliver it again
            log.error("could not publish run.failed: %s", redact(str(exc)))
            return Outcome.NACK
        return Outcome.NACK if error.retryable else Outcome.ACK

    def _events(self, run_id: str, attempt: int, data_source_id: int | None, etl_run_id: int | None,
                dest_table: str | None, load_type: str | None, id_salt: str = "",
                context: dict[str, Any] | None = None) -> RunEvents:
        return RunEvents(self._bus, run_id=run_id, attempt=attempt, data_source_id=data_source_id,
                         etl_run_id=etl_run_id, dest_table=dest_table, load_type=load_type,
                         progress_interval_s=self._progress_interval_s, id_salt=id_salt, context=context)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _best_effort_ids(data: bytes) -> dict[str, Any]:
    """Whatever identifiers an invalid request still carries, so Django can match the failure."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        body = None
    body = body if isinstance(body, dict) else {}

    def pick(key: str, kind: type) -> Any:
        value = body.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    load_type = body.get("load_type")
    dest = pick("dest_table_name", str)
    context = pick("context", dict)
    small = context is not None and len(json.dumps(context, default=str)) <= MAX_CONTEXT_BYTES
    return {
        "data_source_id": pick("data_source_id", int),
        "etl_run_id": pick("etl_run_id", int),
        "dest_table": dest[:1024] if dest else None,
        "load_type": load_type if load_type in MODE_NAMES else None,
        "context": context if small else None,
    }
