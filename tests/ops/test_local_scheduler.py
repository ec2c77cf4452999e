"""`etl-worker scheduler`: the schedule file run in-process on a fake clock (no wall-clock waits),
publishing to the request topic on the Pub/Sub emulator, where a worker serving the emulators runs
each firing as a new run."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.emulators import Emulator
from tests import forkserver
from tests.e2e.stack import Stack, make_settings, serving
from tests.ops.schedule_files import item_request, items_source, write_toml
from worker.commands.local_scheduler import LocalScheduler, next_firing, run_scheduler
from worker.commands.schedules import Job, load_schedule

T0 = datetime(2024, 5, 1, 10, 1, 30, tzinfo=UTC)


class FakeClock:
    """Time moves only when the scheduler waits; `lag` makes each wake-up late by that much."""

    def __init__(self, start: datetime, lag: timedelta = timedelta()) -> None:
        self.t, self.lag, self.waits = start, lag, list[datetime]()

    def now(self) -> datetime:
        return self.t

    def wait_until(self, moment: datetime, stop: threading.Event) -> bool:
        self.waits.append(moment)
        self.t = max(self.t, moment + self.lag)
        return not stop.is_set()


def job(name: str, schedule: str, time_zone: str = "Etc/UTC") -> Job:
    return Job(name=name, schedule=schedule, time_zone=time_zone, request=item_request(Path("x.sqlite")))


def test_a_short_cron_fires_on_time_on_a_fake_clock() -> None:
    jobs = [job("every-5", "*/5 * * * *"), job("hourly-berlin", "0 * * * *", "Europe/Berlin")]
    published: list[str] = []

    def publish(fired: Job) -> str:
        published.append(fired.name)
        return f"m{len(published)}"

    scheduler = LocalScheduler(jobs, publish, FakeClock(T0))
    scheduler.run(threading.Event(), max_firings=14)
    at = [(name, when.strftime("%H:%M")) for name, when, _ in scheduler.fired]
    assert at[:3] == [("every-5", "10:05"), ("every-5", "10:10"), ("every-5", "10:15")]
    assert ("hourly-berlin", "11:00") in at  # 13:00 in Berlin (CEST) is 11:00 UTC
    assert at[at.index(("hourly-berlin", "11:00")) - 1:][:3] == [
        ("every-5", "11:00"), ("hourly-berlin", "11:00"), ("every-5", "11:05")]
    assert published == [name for name, _, _ in scheduler.fired]


def test_a_late_wake_up_fires_once_and_does_not_catch_up() -> None:
    clock = FakeClock(T0, lag=timedelta(minutes=17))  # a laptop that slept
    scheduler = LocalScheduler([job("every-5", "*/5 * * * *")], lambda j: "m", clock)
    scheduler.run(threading.Event(), max_firings=3)
    assert [when.strftime("%H:%M") for _, when, _ in scheduler.fired] == ["10:05", "10:25", "10:45"]


def test_a_stopped_scheduler_returns_and_a_failed_publish_is_logged_not_fatal() -> None:
    stop = threading.Event()

    def publish(j: Job) -> str:
        stop.set()
        raise RuntimeError("topic gone")

    scheduler = LocalScheduler([job("every-5", "*/5 * * * *")], publish, FakeClock(T0))
    scheduler.run(stop)
    assert scheduler.fired == []


def test_daylight_saving_follows_the_time_zone() -> None:
    nightly = job("nightly", "30 2 * * *", "Europe/Berlin")
    before = next_firing(nightly, datetime(2024, 10, 26, 12, 0, tzinfo=UTC))
    after = next_firing(nightly, before)
    assert (before.hour, after.hour) == (0, 1)  # 02:30 CEST, then 02:30 CET


def test_the_scheduler_publishes_to_the_topic_and_the_worker_runs_each_firing(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, tmp_path: Path
) -> None:
    settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset)
    stack = Stack(settings)
    inspect = stack.subscriber.subscription_path(settings.gcp_project_id,
                                                 settings.etl_request_topic + "-inspect")
    stack.subscriber.create_subscription(name=inspect, topic=stack.request_topic)
    source = items_source(tmp_path / "shop.sqlite")
    path = write_toml(tmp_path / "schedules.toml", [{
        "name": "items-every-5-minutes", "schedule": "*/5 * * * *", "attributes": {"origin": "scheduler"},
        "request": item_request(source)}])
    [expected] = load_schedule(path, for_cloud=False)
    with serving(settings):
        assert run_scheduler(settings, path, stop=threading.Event(), clock=FakeClock(T0), max_firings=2) == 0
        # Then each firing is a run of its own (msg-<message id>), and both commit
        stack.wait_for(lambda events: sum(e["event_type"] == "run.completed" for e in events) >= 2)
    completed = [e for e in stack.pull_events() if e["event_type"] == "run.completed"]
    assert len({e["run_id"] for e in completed}) == 2
    assert all(e["run_id"].startswith("msg-") for e in completed)
    assert all(e["context"] == {"schedule": "items-every-5-minutes"} and e["rows_loaded"] == 12
               for e in completed)
    # And the messages are the file's request, byte for byte, with its attributes
    pulled = pull(stack, inspect, 2)
    assert [m.message.data for m in pulled] == [expected.data, expected.data]
    assert all(dict(m.message.attributes) == {"origin": "scheduler"} for m in pulled)
    assert json.loads(pulled[0].message.data) == item_request(source)


def pull(stack: Stack, subscription: str, count: int) -> list[Any]:
    """Unary pulls until `count` messages came (the emulator may hand them out one by one)."""
    got: list[Any] = []
    for _ in range(20):
        response = stack.subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
        got += response.received_messages
        if len(got) >= count:
            return got
    raise AssertionError(f"{len(got)} message(s) on {subscription}")


def test_schedule_apply_without_a_region_says_what_to_set(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "s.toml", [{"name": "n", "schedule": "0 * * * *",
                                             "request": item_request(Path("x.sqlite"))}])
    result = forkserver.run([sys.executable, "-m", "worker", "schedule", "apply", str(path), "--dry-run"],
                            env={**os.environ, "GCP_PROJECT_ID": "etl-test"},
                            timeout=60)
    assert result.returncode == 2
    assert "give --location or set ETL_SCHEDULER_LOCATION" in result.stderr
