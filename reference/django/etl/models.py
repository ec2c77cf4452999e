"""Data sources, jobs, runs, processed events and the optional outbox.

A Run's fields mirror the events of docs/events.md; `attempt`/`seq` are the newest (attempt, seq)
applied, so an older event can be recognised and skipped.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models


class SourceType(models.TextChoices):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    SQLITE = "sqlite"


class PasswordKind(models.TextChoices):
    """Where the WORKER finds the password. Django never stores the password itself: requests are
    retained by Pub/Sub (dead letters for a week), so a plaintext password would travel and stay."""

    NONE = "", "no password"
    ENV = "password_env", "environment variable of the worker"
    FILE = "password_file", "file on the worker"
    SECRET = "password_secret", "Secret Manager secret"


class LoadType(models.TextChoices):
    CATALOG = "catalog"
    TRANSACTIONAL = "transactional"
    MERGE = "merge"


WINDOWED_LOAD_TYPES = (LoadType.TRANSACTIONAL, LoadType.MERGE)


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    REPLAYED = "replayed"
    COMPLETED = "completed"


# States in which the worker may still send something that changes the run.
ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING, RunState.RETRYING, RunState.REPLAYED)


class RunOrigin(models.TextChoices):
    DJANGO = "django", "Run Now (Django)"
    SCHEDULED = "scheduled", "adopted (Cloud Scheduler or another publisher)"


class DataSource(models.Model):
    name = models.CharField(max_length=200, unique=True)
    source_type = models.CharField(max_length=20, choices=SourceType.choices)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=4096, help_text="Database name (sqlite: file path on the worker).")
    username = models.CharField(max_length=255, blank=True)
    password_kind = models.CharField(max_length=20, choices=PasswordKind.choices, blank=True, default="")
    password_ref = models.CharField(
        max_length=1024, blank=True,
        help_text="The reference, never the password: a variable name (ETL_SECRET_...), a path under "
        "/run/secrets, or projects/P/secrets/S[/versions/V].")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if bool(self.password_kind) != bool(self.password_ref):
            raise ValidationError("password kind and reference go together")
        if self.source_type != SourceType.SQLITE and not self.host:
            raise ValidationError({"host": f"{self.source_type} sources need a host"})


class Job(models.Model):
    name = models.CharField(max_length=200)
    data_source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="jobs")
    source_schema = models.CharField(max_length=128, blank=True)
    source_table = models.CharField(max_length=128)
    dest_table = models.CharField(max_length=1024)
    load_type = models.CharField(max_length=20, choices=LoadType.choices)
    timestamp_column = models.CharField(max_length=128, blank=True)
    selected_columns = models.JSONField(null=True, blank=True, help_text="List of columns; empty: all.")
    primary_key = models.JSONField(null=True, blank=True, help_text="merge: list of key columns.")
    soft_delete_column = models.CharField(max_length=128, blank=True)
    reconcile_deletes = models.BooleanField(default=False)
    historical_start_date = models.CharField(max_length=64, blank=True)
    strict_types = models.BooleanField(default=False)
    # Stored verbatim from run.completed's `watermark`; `last_sync_key` is its `watermark_key`, the
    # only thing ever compared (watermarks themselves do not sort as text).
    last_sync_value = models.CharField(max_length=64, null=True, blank=True)
    last_sync_key = models.TextField(null=True, blank=True, editable=False)
    schedule = models.CharField(max_length=100, blank=True,
                                help_text="Informational, e.g. Cloud Scheduler's cron.")
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            # A window belongs to (data source, destination table): one job per pair, which is also
            # what lets an adopted run without context find its job.
            models.UniqueConstraint(fields=["data_source", "dest_table"], name="etl_job_one_per_destination"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def windowed(self) -> bool:
        return self.load_type in WINDOWED_LOAD_TYPES

    def clean(self) -> None:
        if self.windowed and not self.timestamp_column:
            raise ValidationError({"timestamp_column": f"{self.load_type} jobs need a timestamp column"})
        if self.load_type != LoadType.MERGE and (self.primary_key or self.soft_delete_column
                                                   or self.reconcile_deletes):
            raise ValidationError("primary key, soft delete column and reconcile deletes are for merge")


class Run(models.Model):
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    # The worker's run id: etl-run-<pk> for Run Now, msg-<message id> for an adopted scheduled run.
    run_id = models.CharField(max_length=200, unique=True, null=True, blank=True)
    origin = models.CharField(max_length=20, choices=RunOrigin.choices, default=RunOrigin.DJANGO)
    state = models.CharField(max_length=20, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # What was sent (references only: a Django request never carries a password).
    request = models.JSONField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=100, blank=True)
    publish_error = models.TextField(blank=True)

    # The newest event applied, by (attempt, seq).
    attempt = models.PositiveIntegerField(default=0)
    seq = models.BigIntegerField(default=0)
    last_event_type = models.CharField(max_length=40, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)

    phase = models.CharField(max_length=20, blank=True)
    rows_expected = models.BigIntegerField(null=True, blank=True)
    fraction = models.FloatField(null=True, blank=True)
    rows_extracted = models.BigIntegerField(default=0)
    rows_loaded = models.BigIntegerField(default=0)
    batches_loaded = models.BigIntegerField(default=0)
    duration_seconds = models.FloatField(null=True, blank=True)
    source_row_count = models.BigIntegerField(null=True, blank=True)
    window_low = models.CharField(max_length=64, null=True, blank=True)
    window_high = models.CharField(max_length=64, null=True, blank=True)
    watermark = models.CharField(max_length=64, null=True, blank=True)
    watermark_key = models.TextField(null=True, blank=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    values_nulled = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)

    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    error_retryable = models.BooleanField(null=True, blank=True)
    will_retry = models.BooleanField(null=True, blank=True)
    dead_letter_topic = models.CharField(max_length=300, blank=True)
    replay_count = models.PositiveIntegerField(default=0)
    context = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return self.run_id or f"run {self.pk}"

    @property
    def etl_run_id(self) -> int | None:
        """What the request's etl_run_id was: the pk, for runs Django started."""
        return self.pk if self.origin == RunOrigin.DJANGO else None

    def outcome(self) -> dict[str, Any]:
        """The fields an event stream decides, whatever order it arrived in (tests compare these).
        Left out: in-flight details (rows_expected, phase, last_event_*) that only the newest event
        of an unfinished attempt sets."""
        names = ("state", "attempt", "seq", "rows_extracted", "rows_loaded", "batches_loaded",
                 "duration_seconds", "fraction", "source_row_count", "window_low", "window_high",
                 "watermark", "watermark_key", "committed_at", "values_nulled", "warnings", "error_type",
                 "error_message", "error_retryable", "will_retry", "dead_letter_topic", "replay_count")
        return {name: getattr(self, name) for name in names}


class ProcessedEvent(models.Model):
    """One row per event_id ever handled, written in the transaction that applied it: the dedupe."""

    event_id = models.CharField(max_length=100, unique=True)
    event_type = models.CharField(max_length=40)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    attempt = models.PositiveIntegerField(default=0)
    seq = models.BigIntegerField(default=0)
    applied = models.BooleanField(default=False, help_text="False: older than what the run already had.")
    note = models.CharField(max_length=300, blank=True)
    processed_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField()

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class OutboxMessage(models.Model):
    """A request written in the same transaction as its Run; `publish_outbox` sends it."""

    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="outbox")
    topic = models.CharField(max_length=300)
    data = models.TextField()
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    message_id = models.CharField(max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"outbox {self.pk} → {self.topic}"
