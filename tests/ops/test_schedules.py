"""`etl-worker schedule apply` against a fake Cloud Scheduler client (there is no emulator): exact
payload and attributes, idempotence, updates of only what differs, pruning, and refusals."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.cloud import scheduler_v1

from tests.e2e.stack import settings_from_env
from tests.ops.schedule_files import item_request, write_toml
from worker.commands.schedules import ScheduleFileError, apply_command, load_schedule
from worker.settings import Settings

PARENT = "projects/etl-test/locations/europe-west1"
TOPIC = "projects/etl-test/topics/etl-run-requested"


class FakeScheduler:
    """Cloud Scheduler's job store, in memory; every call is recorded."""

    def __init__(self, jobs: Sequence[scheduler_v1.Job] = ()) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.calls: list[tuple[str, Any]] = []

    def list_jobs(self, *, parent: str) -> list[scheduler_v1.Job]:
        self.calls.append(("list", parent))
        return [job for name, job in self.jobs.items() if name.startswith(parent + "/jobs/")]

    def create_job(self, *, parent: str, job: scheduler_v1.Job) -> scheduler_v1.Job:
        assert job.name not in self.jobs and job.name.startswith(parent + "/jobs/")
        self.calls.append(("create", job.name))
        self.jobs[job.name] = job
        return job

    def update_job(self, *, job: scheduler_v1.Job, update_mask: Any) -> scheduler_v1.Job:
        self.calls.append(("update", (job.name, list(update_mask.paths))))
        stored = self.jobs[job.name]
        for path in update_mask.paths:
            setattr(stored, path, getattr(job, path))
        return stored

    def delete_job(self, *, name: str) -> None:
        self.calls.append(("delete", name))
        del self.jobs[name]

    def changes(self) -> list[tuple[str, Any]]:
        return [call for call in self.calls if call[0] != "list"]


def settings() -> Settings:
    return settings_from_env({"GCP_PROJECT_ID": "etl-test", "ETL_SCHEDULER_LOCATION": "europe-west1"})


def apply(path: Path, client: FakeScheduler, *flags: str) -> str:
    out = io.StringIO()
    assert apply_command(settings(), path, dry_run="--dry-run" in flags, prune="--prune" in flags,
                         location=None, out=out, client=client) == 0
    return out.getvalue()


def jobs_file(tmp_path: Path, **first: Any) -> Path:
    orders = {"name": "orders-hourly", "schedule": "0 * * * *", "time_zone": "Europe/Berlin",
              "request": item_request(Path("/data/shop.sqlite"), dest_table_name="orders"), **first}
    items = {"name": "items-nightly", "schedule": "30 2 * * *", "attributes": {"origin": "scheduler"},
             "request": item_request(Path("/data/shop.sqlite"))}
    return write_toml(tmp_path / "schedules.toml", [orders, items])


def test_apply_creates_jobs_that_publish_the_exact_request(tmp_path: Path) -> None:
    path, client = jobs_file(tmp_path), FakeScheduler()
    out = apply(path, client)
    assert client.changes() == [("create", f"{PARENT}/jobs/etl-orders-hourly"),
                                ("create", f"{PARENT}/jobs/etl-items-nightly")]
    job = client.jobs[f"{PARENT}/jobs/etl-orders-hourly"]
    assert (job.schedule, job.time_zone) == ("0 * * * *", "Europe/Berlin")
    assert job.pubsub_target.topic_name == TOPIC
    request = item_request(Path("/data/shop.sqlite"), dest_table_name="orders")
    assert job.pubsub_target.data == json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(job.pubsub_target.data) == request
    assert dict(job.pubsub_target.attributes) == {}
    nightly = client.jobs[f"{PARENT}/jobs/etl-items-nightly"]
    assert dict(nightly.pubsub_target.attributes) == {"origin": "scheduler"}
    assert nightly.time_zone == "Etc/UTC" and "managed by etl-worker" in nightly.description
    assert "create        etl-orders-hourly  0 * * * * (Europe/Berlin)" in out
    assert out.splitlines()[-1] == f"2 create ({PARENT})"


def test_apply_again_changes_nothing(tmp_path: Path) -> None:
    path, client = jobs_file(tmp_path), FakeScheduler()
    apply(path, client)
    client.calls.clear()
    out = apply(path, client)
    assert client.changes() == []
    assert out.splitlines()[-1] == f"2 unchanged ({PARENT})"


def test_dry_run_shows_the_diff_and_changes_nothing(tmp_path: Path) -> None:
    client = FakeScheduler()
    apply(jobs_file(tmp_path), client)
    client.calls.clear()
    changed = jobs_file(tmp_path, schedule="*/30 * * * *",
                        request=item_request(Path("/data/shop.sqlite"), dest_table_name="orders",
                                             load_type="transactional", timestamp_column="at"))
    out = apply(changed, client, "--dry-run")
    assert client.changes() == []
    line = next(x for x in out.splitlines() if "etl-orders-hourly" in x)
    assert line.startswith("would update  etl-orders-hourly")
    assert "schedule: '0 * * * *' → '*/30 * * * *'" in line
    assert "request: load_type, timestamp_column changed" in line
    assert out.splitlines()[-1] == f"dry run: 1 update, 1 unchanged ({PARENT})"
    # Then applying it updates just those fields of that job
    apply(changed, client)
    name = f"{PARENT}/jobs/etl-orders-hourly"
    assert client.changes() == [("update", (name, ["schedule", "pubsub_target"]))]
    stored = client.jobs[name]
    assert stored.schedule == "*/30 * * * *"
    assert json.loads(stored.pubsub_target.data)["load_type"] == "transactional"


def test_prune_deletes_only_our_jobs_that_the_file_no_longer_has(tmp_path: Path) -> None:
    foreign = scheduler_v1.Job(name=f"{PARENT}/jobs/etl-someone-elses", schedule="0 1 * * *",
                               pubsub_target=scheduler_v1.PubsubTarget(topic_name="projects/etl-test/topics/other"))
    unprefixed = scheduler_v1.Job(name=f"{PARENT}/jobs/backup", schedule="0 1 * * *",
                                  pubsub_target=scheduler_v1.PubsubTarget(topic_name=TOPIC))
    client = FakeScheduler([foreign, unprefixed])
    apply(jobs_file(tmp_path), client)
    only_items = write_toml(tmp_path / "fewer.toml", [{"name": "items-nightly", "schedule": "30 2 * * *",
                                                       "attributes": {"origin": "scheduler"},
                                                       "request": item_request(Path("/data/shop.sqlite"))}])
    client.calls.clear()
    assert "etl-orders-hourly" not in apply(only_items, client)  # without --prune: left alone
    assert client.changes() == []
    out = apply(only_items, client, "--dry-run", "--prune")
    assert "would delete  etl-orders-hourly" in out and client.changes() == []
    apply(only_items, client, "--prune")
    assert client.changes() == [("delete", f"{PARENT}/jobs/etl-orders-hourly")]
    assert set(client.jobs) == {foreign.name, unprefixed.name, f"{PARENT}/jobs/etl-items-nightly"}


@pytest.mark.parametrize(("change", "message"), [
    ({"request": {"data_source_id": 3}}, "invalid etl-run-requested message"),
    ({"request": item_request(Path("x.sqlite"), etl_run_id=5)}, "must not carry etl_run_id"),
    ({"attributes": {"run_id": "fixed"}}, "every firing the same run"),
    ({"schedule": "61 * * * *"}, "not a cron expression"),
    ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
    ({"request": {**item_request(Path("x")), "source_type": "postgresql",
                  "connection_params": {"host": "db", "database": "shop", "password": "hunter22"}}},
     "keeps the payload in clear"),
])
def test_a_bad_job_is_refused_before_anything_is_created(tmp_path: Path, change: dict[str, Any],
                                                         message: str) -> None:
    client = FakeScheduler()
    with pytest.raises(ScheduleFileError, match=message) as refused:
        apply(jobs_file(tmp_path, **change), client)
    assert client.calls == [] and "hunter22" not in str(refused.value)


def test_json_files_and_the_local_scheduler_allow_a_plaintext_password(tmp_path: Path) -> None:
    body = {**item_request(Path("x")), "source_type": "postgresql",
            "connection_params": {"host": "127.0.0.1", "database": "shop", "password": "local-only"}}
    path = tmp_path / "local.json"
    path.write_text(json.dumps({"jobs": [{"name": "local", "schedule": "* * * * *", "request": body}]}))
    assert load_schedule(path, for_cloud=False)[0].request == body
    with pytest.raises(ScheduleFileError):
        load_schedule(path, for_cloud=True)
