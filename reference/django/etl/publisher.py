"""Run Now: a Run row, then its request on Pub/Sub.

Default (`PUBLISH_MODE = "on_commit"`): the request is published from `transaction.on_commit`, so
the worker can never see a run that Django rolled back, and the Run exists before any event about it
can arrive. The gap: a crash between the commit and the publish leaves the run `queued` with no
message. `PUBLISH_MODE = "outbox"` closes it: the request is written to OutboxMessage in the same
transaction and `manage.py publish_outbox` (cron, or a loop) sends it; a publish repeated after a
crash is harmless, because the worker applies one etl_run_id once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from etl import pubsub
from etl.conf import PUBLISH_MODES, etl_setting
from etl.models import Job, OutboxMessage, Run, RunOrigin, RunState
from etl.request_builder import build_request

log = logging.getLogger(__name__)
OUTBOX_BATCH = 100


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def request_run(job: Job) -> Run:
    """A queued Run of `job` and its request (published after commit, or put in the outbox).
    An invalid request raises InvalidRequest and leaves nothing behind."""
    mode = etl_setting("PUBLISH_MODE")
    if mode not in PUBLISH_MODES:
        raise ValueError(f"settings.ETL['PUBLISH_MODE'] must be one of {PUBLISH_MODES}, not {mode!r}")
    with transaction.atomic():
        run = Run.objects.create(job=job, origin=RunOrigin.DJANGO, state=RunState.QUEUED)
        run.run_id = f"etl-run-{run.pk}"  # the worker's rule for a request with etl_run_id
        run.request = build_request(job, run)
        run.save(update_fields=["run_id", "request"])
        data = encode(run.request)
        if mode == "outbox":
            OutboxMessage.objects.create(run=run, topic=etl_setting("REQUEST_TOPIC"), data=data.decode())
        else:
            transaction.on_commit(lambda: publish_now(run.pk, data))
    return run


def publish_now(run_pk: int, data: bytes) -> None:
    """After commit. A failure is recorded on the run (and logged), never raised into the request
    that already committed."""
    try:
        message_id = pubsub.publish_request(data)
    except Exception as exc:
        log.error("request of run %s not published: %s", run_pk, type(exc).__name__)
        Run.objects.filter(pk=run_pk).update(publish_error=f"{type(exc).__name__}: {exc}"[:2000])
        return
    Run.objects.filter(pk=run_pk).update(published_at=timezone.now(), message_id=message_id, publish_error="")


def publish_outbox(limit: int | None = None) -> tuple[int, int]:
    """Send what the outbox holds, oldest first; (published, failed). Rows are locked with SKIP LOCKED,
    so several publishers can run at once. A row is marked only after Pub/Sub confirmed it."""
    published = failed = 0
    tried: set[int] = set()
    while limit is None or published + failed < limit:
        size = OUTBOX_BATCH if limit is None else min(OUTBOX_BATCH, limit - published - failed)
        with transaction.atomic():
            batch = list(OutboxMessage.objects.select_for_update(skip_locked=True)
                         .filter(published_at__isnull=True).exclude(pk__in=tried)[:size])
            if not batch:
                break
            for message in batch:
                tried.add(message.pk)
                ok = _publish_one(message)
                published, failed = published + ok, failed + (not ok)
    return published, failed


def _publish_one(message: OutboxMessage) -> bool:
    message.attempts += 1
    try:
        future = pubsub.publisher().publish(pubsub.topic_path(message.topic), message.data.encode(),
                                            **message.attributes)
        message.message_id = str(future.result(timeout=pubsub.PUBLISH_TIMEOUT_S))
    except Exception as exc:
        message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        message.save(update_fields=["attempts", "last_error"])
        return False
    message.published_at = timezone.now()
    message.last_error = ""
    message.save(update_fields=["attempts", "last_error", "message_id", "published_at"])
    if message.run_id:
        Run.objects.filter(pk=message.run_id).update(published_at=message.published_at,
                                                     message_id=message.message_id)
    return True
