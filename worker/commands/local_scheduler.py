"""`etl-worker scheduler FILE`: the schedule file's requests published on time, in-process.

The local stand-in for Cloud Scheduler (laptops, the emulator): the same file as `schedule apply`,
the same payload and attributes, published to the request topic when each job's cron fires in its
time zone (cronsim). Like Cloud Scheduler, it does not catch up: after a pause (a laptop asleep)
each late job fires once, then keeps to its cron from the current time.

The clock is a parameter, so tests run a short cron on a fake clock without waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from cronsim import CronSim
from google.cloud import pubsub_v1

from worker.commands.schedules import Job, load_schedule
from worker.logs import redact
from worker.settings import Settings

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 60.0
MAX_NAP_S = 30.0  # re-read the clock at least this often (it may jump)

Publish = Callable[[Job], str]


class Clock(Protocol):
    def now(self) -> datetime: ...

    def wait_until(self, moment: datetime, stop: threading.Event) -> bool:
        """Return True at `moment`, False as soon as `stop` is set."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait_until(self, moment: datetime, stop: threading.Event) -> bool:
        while not stop.is_set():
            left = (moment - self.now()).total_seconds()
            if left <= 0:
                return True
            stop.wait(min(left, MAX_NAP_S))
        return False


def next_firing(job: Job, after: datetime) -> datetime:
    """The first time after `after` (exclusive) that the job's cron matches in its time zone (UTC)."""
    local = after.astimezone(ZoneInfo(job.time_zone))
    return next(iter(CronSim(job.schedule, local))).astimezone(UTC)


class LocalScheduler:
    def __init__(self, jobs: list[Job], publish: Publish, clock: Clock) -> None:
        self._jobs = jobs
        self._publish = publish
        self._clock = clock
        self.fired: list[tuple[str, datetime, str]] = []  # (job, scheduled time, message id)

    def run(self, stop: threading.Event, max_firings: int | None = None) -> None:
        start = self._clock.now()
        due = {job.name: next_firing(job, start) for job in self._jobs}
        for job in self._jobs:
            log.info("job %s: %s (%s), next at %s", job.name, job.schedule, job.time_zone,
                     due[job.name].isoformat())
        while self._jobs and (max_firings is None or len(self.fired) < max_firings):
            moment = min(due.values())
            if not self._clock.wait_until(moment, stop):
                return
            now = self._clock.now()
            for job in self._jobs:
                if due[job.name] <= now and (max_firings is None or len(self.fired) < max_firings):
                    self._fire(job, due[job.name])
                    due[job.name] = next_firing(job, max(now, due[job.name]))

    def _fire(self, job: Job, scheduled: datetime) -> None:
        try:
            message_id = self._publish(job)
        except Exception as exc:  # this firing is lost, as with Cloud Scheduler past its retries
            log.error("job %s: the request for %s was not published: %s", job.name, scheduled.isoformat(),
                      redact(str(exc)))
            return
        self.fired.append((job.name, scheduled, message_id))
        log.info("job %s: published the request for %s (message %s)", job.name, scheduled.isoformat(),
                 message_id)


def pubsub_publisher(settings: Settings) -> Publish:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(settings.gcp_project_id, settings.etl_request_topic)

    def publish(job: Job) -> str:
        return str(publisher.publish(topic, job.data, **job.attributes).result(timeout=PUBLISH_TIMEOUT_S))

    return publish


def run_scheduler(settings: Settings, path: Path, *, stop: threading.Event, clock: Clock | None = None,
                  publish: Publish | None = None, max_firings: int | None = None) -> int:
    jobs = load_schedule(path, for_cloud=False)
    scheduler = LocalScheduler(jobs, publish or pubsub_publisher(settings), clock or SystemClock())
    log.info("scheduler: %d job(s) from %s publishing to %s", len(jobs), path, settings.etl_request_topic)
    scheduler.run(stop, max_firings)
    return 0

