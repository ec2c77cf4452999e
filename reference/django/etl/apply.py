"""One event, one database transaction: dedupe on event_id, find (or adopt) the run, apply the event,
move the job's watermark. The caller acks the message only after this returns (the commit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from etl.conf import etl_setting
from etl.contract import event_problems
from etl.models import Job, ProcessedEvent, Run, RunOrigin
from etl.state import advance_watermark, apply_event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What handling one event did (for logs, the command's summary and tests)."""

    event_id: str | None
    event_type: str | None
    run_pk: int | None = None
    duplicate: bool = False
    applied: bool = False
    adopted: bool = False
    watermark_advanced: bool = False
    note: str = ""


def handle_event(event: Any) -> Outcome:
    problems = event_problems(event)
    if problems:
        # Nothing can be done with it, now or on redelivery: the caller acks it (and it is logged).
        return Outcome(None, None, note="rejected: " + "; ".join(problems)[:500])
    with transaction.atomic():
        record = _record(event)
        if record is None:
            return Outcome(event["event_id"], event["event_type"], duplicate=True)
        return _apply(record, event)


def _record(event: dict[str, Any]) -> ProcessedEvent | None:
    """The dedupe row, or None if this event_id was handled before. A concurrent consumer holding the
    same event_id blocks here until it commits (then: duplicate) or rolls back (then: ours)."""
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives the conflict
            return ProcessedEvent.objects.create(
                event_id=event["event_id"], event_type=event["event_type"], attempt=event["attempt"],
                seq=event["seq"], payload=event)
    except IntegrityError:
        return None


def _apply(record: ProcessedEvent, event: dict[str, Any]) -> Outcome:
    run, adopted, note = _locked_run(event)
    outcome = Outcome(event["event_id"], event["event_type"], note=note)
    if run is None:
        record.note = note
        record.save(update_fields=["note"])
        return outcome
    applied = apply_event(run, event)
    if applied or adopted:
        run.save()
    advanced = _advance_job(run, event)
    record.run, record.applied, record.note = run, applied, note
    record.save(update_fields=["run", "applied", "note"])
    return Outcome(event["event_id"], event["event_type"], run_pk=run.pk, applied=applied, adopted=adopted,
                   watermark_advanced=advanced, note=note)


def _locked_run(event: dict[str, Any]) -> tuple[Run | None, bool, str]:
    """(run, adopted, note). The run row is locked until the commit, so two consumers apply one run's
    events one at a time."""
    if _other_environment(event):
        return None, False, "context names another environment: ignored"
    run = Run.objects.select_for_update().filter(run_id=event["run_id"]).first()
    if run is not None:
        return run, False, ""
    if event.get("etl_run_id") is not None:
        # Django numbered this run, yet no Run has the id: another Django sharing the topic, or a
        # deleted run. Adopting it would take a run id our own next Run will want.
        return None, False, "etl_run_id of no run here: ignored"
    return _adopt(event)


def _other_environment(event: dict[str, Any]) -> bool:
    ours = etl_setting("ENVIRONMENT")
    context = event.get("context")
    theirs = context.get("environment") if isinstance(context, dict) else None
    return bool(ours) and theirs is not None and theirs != ours


def _adopt(event: dict[str, Any]) -> tuple[Run, bool, str]:
    """A run Django did not start (Cloud Scheduler's static body): a new Run of the job its context
    names, else of the job loading the same (data source, destination table)."""
    job = job_for(event)
    try:
        with transaction.atomic():
            run = Run.objects.create(run_id=event["run_id"], origin=RunOrigin.SCHEDULED, job=job,
                                     context=event.get("context"))
    except IntegrityError:  # another consumer adopted it a moment ago: use theirs
        return Run.objects.select_for_update().get(run_id=event["run_id"]), False, ""
    log.info("adopted run %s as a run of job %s", event["run_id"], job.pk if job else None)
    return run, True, "adopted" if job else "adopted (no job matches)"


def job_for(event: dict[str, Any]) -> Job | None:
    context = event.get("context")
    job_id = context.get("job_id") if isinstance(context, dict) else None
    data_source_id = event.get("data_source_id")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job = Job.objects.filter(pk=job_id, data_source_id=data_source_id).first()
        if job is not None:
            return job
    if data_source_id is None or not event.get("dest_table"):
        return None
    return Job.objects.filter(data_source_id=data_source_id, dest_table=event["dest_table"]).first()


def _advance_job(run: Run, event: dict[str, Any]) -> bool:
    if event["event_type"] != "run.completed" or run.job_id is None or event.get("watermark") is None:
        return False
    job = Job.objects.select_for_update().get(pk=run.job_id)  # lock order: run, then job
    if not advance_watermark(job, event):
        return False
    job.save(update_fields=["last_sync_value", "last_sync_key"])
    return True
