"""Schedule files, and `etl-worker schedule apply`: Cloud Scheduler jobs that publish requests.

A schedule file (TOML or JSON) lists jobs; each publishes its request to the request topic on cron:

```toml
[[jobs]]
name = "orders-hourly"          # the Cloud Scheduler job id is ETL_SCHEDULER_JOB_PREFIX + name
schedule = "0 * * * *"          # unix cron, as Cloud Scheduler reads it
time_zone = "Europe/Berlin"     # default UTC
[jobs.request]                  # a request, exactly as Django would publish it
data_source_id = 7
...
```

Every request is validated by `worker.messages.decode_request` before anything is created. A
request must not carry `etl_run_id` (and a job no `run_id` attribute): every firing would be the
same run, loaded once and then only reported again. `apply` refuses plaintext passwords (a job's
payload is kept in clear by Cloud Scheduler): use `password_env`, `password_file` or
`password_secret`. `apply` is idempotent: it compares each job with the one in Cloud Scheduler
and creates, updates (only the fields that differ) or leaves it; `--prune` deletes the jobs with
the prefix that publish to the request topic and that the file no longer has.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker import constants as c
from worker.errors import MessageDecodeError
from worker.messages import decode_request, utcnow
from worker.settings import Settings

DEFAULT_TIME_ZONE = "Etc/UTC"
MANAGED = "managed by etl-worker schedule apply"
COMPARED = ("description", "schedule", "time_zone", "pubsub_target")
NO_CREDENTIALS = ("no Google credentials for Cloud Scheduler: run `gcloud auth application-default login` "
                  "or set GOOGLE_APPLICATION_CREDENTIALS")


class ScheduleFileError(ValueError):
    """The schedule file cannot be used (one line for the terminal; no secret in it)."""


class Job(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,400}$")
    schedule: str = Field(..., min_length=9, max_length=200)
    time_zone: str = DEFAULT_TIME_ZONE
    description: str | None = Field(default=None, max_length=400)
    attributes: dict[str, str] = Field(default_factory=dict)
    request: dict[str, Any]

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            CronSim(value, utcnow())
        except CronSimError as exc:
            raise ValueError(f"not a cron expression ({exc})") from None
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("attributes")
    @classmethod
    def _no_run_id(cls, value: dict[str, str]) -> dict[str, str]:
        if c.ATTR_RUN_ID in value:
            raise ValueError("a run_id attribute would make every firing the same run")
        return value

    @property
    def data(self) -> bytes:
        """The request as published: compact JSON with sorted keys (stable, so apply can compare)."""
        return json.dumps(self.request, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ScheduleFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    jobs: list[Job] = Field(..., max_length=1000)


def load_schedule(path: Path, *, for_cloud: bool) -> list[Job]:
    """The file's jobs, each request valid; `for_cloud` also refuses plaintext passwords."""
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        jobs = ScheduleFile.model_validate(raw).jobs
    except OSError as exc:
        raise ScheduleFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScheduleFileError(f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False)[:5])
        raise ScheduleFileError(f"{path}: {problems}") from None
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ScheduleFileError(f"{path}: job names must be unique")
    for job in jobs:
        _check_request(path, job, for_cloud)
    return jobs


def _check_request(path: Path, job: Job, for_cloud: bool) -> None:
    try:
        request = decode_request(job.data)
    except MessageDecodeError as exc:
        raise ScheduleFileError(f"{path}: job {job.name}: {exc}") from None
    if request.etl_run_id is not None:
        raise ScheduleFileError(f"{path}: job {job.name}: a scheduled request must not carry etl_run_id "
                                "(every firing would be the same run); put a job id in context instead")
    if for_cloud and request.connection_params.password is not None:
        raise ScheduleFileError(f"{path}: job {job.name}: Cloud Scheduler keeps the payload in clear: use "
                                "password_env, password_file or password_secret instead of password")


# --- Cloud Scheduler ------------------------------------------------------------------------------
class SchedulerClient(Protocol):
    """The part of google.cloud.scheduler_v1.CloudSchedulerClient that apply uses."""

    def list_jobs(self, *, parent: str) -> Iterable[Any]: ...
    def create_job(self, *, parent: str, job: Any) -> Any: ...
    def update_job(self, *, job: Any, update_mask: Any) -> Any: ...
    def delete_job(self, *, name: str) -> None: ...


@dataclass(frozen=True)
class Target:
    project: str
    location: str
    topic: str
    prefix: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    def job_path(self, name: str) -> str:
        return f"{self.parent}/jobs/{self.prefix}{name}"


@dataclass(frozen=True)
class Change:
    action: Literal["create", "update", "unchanged", "delete"]
    name: str  # the job's full resource name
    fields: tuple[str, ...] = ()  # update: the fields that differ
    notes: tuple[str, ...] = ()
    job: Any = None  # the desired job (create, update)

    def describe(self, dry_run: bool) -> str:
        verb = {"create": "would create", "update": "would update", "delete": "would delete"}.get(
            self.action, self.action) if dry_run else self.action
        short = self.name.rsplit("/", 1)[-1]
        return "  ".join([f"{verb:<12}", short, *self.notes]).rstrip()


def desired_job(target: Target, job: Job) -> Any:
    from google.cloud import scheduler_v1

    return scheduler_v1.Job(
        name=target.job_path(job.name),
        description=job.description or f"etl-worker schedule {job.name} ({MANAGED})",
        schedule=job.schedule, time_zone=job.time_zone,
        pubsub_target=scheduler_v1.PubsubTarget(topic_name=target.topic_path, data=job.data,
                                                attributes=dict(job.attributes)),
    )


def plan(target: Target, jobs: Sequence[Job], existing: Iterable[Any], prune: bool) -> list[Change]:
    """What apply changes: the file's jobs in order, then (with `prune`) the deletions."""
    found = {job.name: job for job in existing}
    changes = [_compare(desired_job(target, job), found.get(target.job_path(job.name))) for job in jobs]
    if prune:
        wanted = {target.job_path(job.name) for job in jobs}
        changes += [Change("delete", name) for name, job in sorted(found.items())
                    if name not in wanted and _ours(target, job)]
    return changes


def _ours(target: Target, job: Any) -> bool:
    return bool(job.name.startswith(f"{target.parent}/jobs/{target.prefix}")
                and job.pubsub_target and job.pubsub_target.topic_name == target.topic_path)


def _compare(wanted: Any, current: Any | None) -> Change:
    if current is None:
        return Change("create", wanted.name, notes=(f"{wanted.schedule} ({wanted.time_zone})",), job=wanted)
    differing = tuple(f for f in COMPARED if _value(wanted, f) != _value(current, f))
    if not differing:
        return Change("unchanged", wanted.name)
    notes = tuple(_difference(f, current, wanted) for f in differing)
    return Change("update", wanted.name, fields=differing, notes=notes, job=wanted)


def _value(job: Any, name: str) -> Any:
    value = getattr(job, name)
    if name == "pubsub_target":
        return (value.topic_name, bytes(value.data), dict(value.attributes)) if value else None
    return value


def _difference(name: str, current: Any, wanted: Any) -> str:
    if name != "pubsub_target":
        return f"{name}: {getattr(current, name)!r} → {getattr(wanted, name)!r}"
    empty: tuple[str, bytes, dict[str, str]] = ("", b"{}", {})
    before, after = _value(current, name) or empty, _value(wanted, name)
    parts = []
    if before[0] != after[0]:
        parts.append(f"topic: {before[0]} → {after[0]}")
    if before[1] != after[1]:
        parts.append(f"request: {', '.join(_changed_keys(before[1], after[1])) or 'encoding'} changed")
    if before[2] != after[2]:
        parts.append(f"attributes: {sorted(before[2])} → {sorted(after[2])}")
    return "; ".join(parts)


def _changed_keys(before: bytes, after: bytes) -> list[str]:
    """Top-level request fields that differ (names only: values may hold connection details)."""
    try:
        old, new = json.loads(before), json.loads(after)
    except ValueError:
        return ["all"]
    if not isinstance(old, dict):
        return ["all"]
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def apply_changes(client: SchedulerClient, target: Target, changes: Sequence[Change]) -> None:
    from google.protobuf import field_mask_pb2

    for change in changes:
        if change.action == "create":
            client.create_job(parent=target.parent, job=change.job)
        elif change.action == "update":
            client.update_job(job=change.job, update_mask=field_mask_pb2.FieldMask(paths=list(change.fields)))
        elif change.action == "delete":
            client.delete_job(name=change.name)


def apply_command(settings: Settings, path: Path, *, dry_run: bool, prune: bool, location: str | None,
                  out: TextIO, client: SchedulerClient | None = None) -> int:
    jobs = load_schedule(path, for_cloud=True)
    region = location or settings.etl_scheduler_location
    if not region:
        raise ScheduleFileError("give --location or set ETL_SCHEDULER_LOCATION (the jobs' region)")
    target = Target(settings.gcp_project_id, region, settings.etl_request_topic,
                    settings.etl_scheduler_job_prefix)
    client = client or _client()
    changes = plan(target, jobs, client.list_jobs(parent=target.parent), prune)
    for change in changes:
        print(change.describe(dry_run), file=out)
    if not dry_run:
        apply_changes(client, target, changes)
    counts = {a: sum(1 for ch in changes if ch.action == a) for a in ("create", "update", "unchanged",
                                                                      "delete")}
    summary = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
    print(f"{'dry run: ' if dry_run else ''}{summary or 'no jobs'} ({target.parent})", file=out)
    return 0


def _client() -> SchedulerClient:
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import scheduler_v1

    try:
        client: SchedulerClient = scheduler_v1.CloudSchedulerClient()
    except DefaultCredentialsError:
        raise ScheduleFileError(NO_CREDENTIALS) from None
    return client
