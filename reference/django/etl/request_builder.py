"""An `etl-run-requested` body from a Job (and its Run), validated before anyone publishes it."""

from __future__ import annotations

from typing import Any

from etl.conf import etl_setting
from etl.contract import validate_request
from etl.models import DataSource, Job, Run

SCHEMA_VERSION = 1


def connection_params(source: DataSource) -> dict[str, Any]:
    """Host, port, database, user and at most a password REFERENCE (the worker resolves it)."""
    params: dict[str, Any] = {"database": source.database}
    if source.host:
        params["host"] = source.host
    if source.port:
        params["port"] = source.port
    if source.username:
        params["username"] = source.username
    if source.password_kind:
        params[source.password_kind] = source.password_ref
    return params


def request_context(job: Job, run: Run | None) -> dict[str, Any]:
    """Echoed back in every event: lets the consumer tie a run to its job, even a scheduled one."""
    context: dict[str, Any] = {"job_id": job.pk}
    if run is not None:
        context["run_id"] = run.pk
    environment = etl_setting("ENVIRONMENT")
    if environment:
        context["environment"] = environment
    return context


def build_request(job: Job, run: Run | None = None) -> dict[str, Any]:
    """The body for one run of `job`. With `run`: its etl_run_id (the run's identity at the worker)
    and the job's last_sync_value. Without (a Cloud Scheduler body, static): neither, and the
    worker starts the window at the ledger's last committed high."""
    source = job.data_source
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "data_source_id": source.pk,
        "source_type": source.source_type,
        "connection_params": connection_params(source),
        "source_table_name": job.source_table,
        "dest_table_name": job.dest_table,
        "load_type": job.load_type,
        "context": request_context(job, run),
    }
    if run is not None:
        body["etl_run_id"] = run.pk
    optional = {
        "schema_name": job.source_schema or None,
        "timestamp_column": job.timestamp_column or None,
        "selected_columns": job.selected_columns or None,
        "historical_start_date": job.historical_start_date or None,
        "last_sync_value": job.last_sync_value if run is not None and job.windowed else None,
        "strict_types": job.strict_types or None,
        # merge only: sent whenever set, so that a misconfigured job is refused, not silently changed
        "primary_key": job.primary_key or None,
        "soft_delete_column": job.soft_delete_column or None,
        "reconcile_deletes": job.reconcile_deletes or None,
    }
    if not job.windowed:
        optional.update(timestamp_column=None, historical_start_date=None)
    # Left out rather than null: the worker's defaults apply, and the body stays small.
    body.update({key: value for key, value in optional.items() if value is not None})
    validate_request(body)
    return body


def scheduler_body(job: Job) -> dict[str, Any]:
    """What Cloud Scheduler should publish for `job`: no etl_run_id (each firing is its own run,
    `msg-<message id>`) and the job in `context`, so consume_events adopts the run as the job's."""
    return build_request(job, run=None)
