"""Streaming pull with flow control, lease management and graceful shutdown.

Turns a handler's Outcome into ack or nack; knows nothing of SQL or BigQuery. A callback never lets
an exception escape (the client would nack and the stream future would fail).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from worker.faults import crash_point, note_delivery
from worker.handlers.base import Delivery, Handler, Outcome
from worker.logs import log_context, redact

log = logging.getLogger(__name__)
# The lease outlives the longest run by this margin, so a run that times out can still nack.
LEASE_MARGIN_S = 300


class Worker:
    def __init__(
        self,
        subscription_path: str,
        handler: Handler,
        *,
        concurrency: int,
        max_run_s: int,
        max_lease_extension_s: int,
        shutdown_grace_s: float,
        client: pubsub_v1.SubscriberClient | None = None,
    ) -> None:
        self._subscription_path = subscription_path
        self._handler = handler
        self._concurrency = concurrency
        self._max_run_s = max_run_s
        self._max_lease_extension_s = max_lease_extension_s
        self._shutdown_grace_s = shutdown_grace_s
        self._client = client or pubsub_v1.SubscriberClient()
        self.stop_requested = threading.Event()  # set by signal handlers or tests
        self._interrupt = threading.Event()  # tells running runs to stop at the next batch
        self._active = 0
        self._active_lock = threading.Lock()

    def serve(self) -> None:
        """Process messages until `stop_requested` is set, then drain within the grace period."""
        flow_control = pubsub_v1.types.FlowControl(
            max_messages=self._concurrency,
            max_lease_duration=self._max_run_s + LEASE_MARGIN_S,
            max_duration_per_lease_extension=self._max_lease_extension_s,
        )
        scheduler = ThreadScheduler(ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="etl-run"))
        future = self._client.subscribe(
            self._subscription_path, self._callback, flow_control=flow_control,
            scheduler=scheduler, await_callbacks_on_shutdown=True,
        )
        log.info("listening on %s (concurrency %d)", self._subscription_path, self._concurrency)
        try:
            while not self.stop_requested.wait(0.5):
                if future.done():  # the stream died: surface why (exit non-zero, get restarted)
                    future.result()
        finally:
            self._drain(future)

    def _drain(self, future: pubsub_v1.subscriber.futures.StreamingPullFuture) -> None:
        started = time.monotonic()
        deadline = started + self._shutdown_grace_s
        log.info("shutting down: %d run(s) in progress", self._active)
        while self._active and time.monotonic() < deadline - 2.0:
            time.sleep(0.1)
        if self._active:
            log.warning("interrupting %d run(s) so their requests are redelivered", self._active)
            self._interrupt.set()
        # With await_callbacks_on_shutdown, cancel() waits for callbacks (their ack/nack is sent)
        # and nacks messages that were leased but not started.
        future.cancel()
        try:
            future.result(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # cancelled futures raise; nothing to do but log
            log.debug("subscriber stopped: %s", exc)
        log.info("stopped after %.1fs", time.monotonic() - started)

    def _callback(self, message: Message) -> None:
        with self._active_lock:
            self._active += 1
        try:
            note_delivery(message.ack_id)
            delivery = Delivery(
                data=message.data, message_id=message.message_id,
                attributes=dict(message.attributes), delivery_attempt=message.delivery_attempt,
                publish_time=message.publish_time,
            )
            outcome = self._handle(delivery)
            with log_context(message_id=message.message_id):
                log.info("%s message %s", outcome.value, message.message_id)
            if outcome is Outcome.ACK:
                crash_point("after_completed")
                message.ack()
            else:
                message.nack()
        except BaseException as exc:  # never let anything escape a callback
            log.error("callback failed; nacking: %s", redact(repr(exc)), exc_info=True)
            message.nack()
        finally:
            with self._active_lock:
                self._active -= 1

    def _handle(self, delivery: Delivery) -> Outcome:
        try:
            return self._handler.handle(delivery, self._interrupt)
        except Exception as exc:
            log.error("handler raised; nacking: %s", redact(repr(exc)), exc_info=True)
            return Outcome.NACK
