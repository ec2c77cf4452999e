"""The worker's one settings object, read from the environment (names kept from the origin runner)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Built once in the CLI and passed down; nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    gcp_project_id: str = Field(validation_alias="GCP_PROJECT_ID", description="Google Cloud project id.")
    bigquery_dataset: str = Field(
        "raw_data", validation_alias="BIGQUERY_DATASET", description="Destination dataset."
    )
    bigquery_location: str | None = Field(
        None, validation_alias="BIGQUERY_LOCATION", description="Dataset location when it is created."
    )
    etl_batch_size: int = Field(
        10_000, ge=1, validation_alias="ETL_BATCH_SIZE", description="Rows fetched per source batch."
    )
    etl_max_retries: int = Field(
        3, ge=1, validation_alias="ETL_MAX_RETRIES", description="Tries of a transient operation."
    )
    etl_retry_delay_s: float = Field(
        5.0, ge=0, validation_alias="ETL_RETRY_DELAY", description="First backoff delay, seconds."
    )
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL", description="Python logging level.")
    pubsub_emulator_host: str | None = Field(
        None, validation_alias="PUBSUB_EMULATOR_HOST", description="host:port of a Pub/Sub emulator."
    )
    bigquery_emulator_host: str | None = Field(
        None,
        validation_alias="BIGQUERY_EMULATOR_HOST",
        description="host:port of a BigQuery emulator; anonymous credentials are used when set.",
    )
    etl_request_topic: str = Field("etl-run-requested", validation_alias="ETL_REQUEST_TOPIC")
    etl_request_subscription: str = Field(
        "etl-run-requested-worker", validation_alias="ETL_REQUEST_SUBSCRIPTION"
    )
    etl_events_topic: str = Field("etl-run-events", validation_alias="ETL_EVENTS_TOPIC")
    etl_dead_letter_topic: str = Field(
        "etl-run-requested-dead-letter", validation_alias="ETL_DEAD_LETTER_TOPIC"
    )
    etl_max_delivery_attempts: int = Field(
        5, ge=5, le=100, validation_alias="ETL_MAX_DELIVERY_ATTEMPTS",
        description="Deliveries before a request is dead-lettered (Pub/Sub allows 5..100).",
    )
    etl_ack_deadline_s: int = Field(
        60, ge=10, le=600, validation_alias="ETL_ACK_DEADLINE_SECONDS",
        description="Ack deadline of the worker subscription.",
    )
    etl_retry_min_backoff_s: int = Field(
        30, ge=0, le=600, validation_alias="ETL_RETRY_MIN_BACKOFF_SECONDS",
        description="Subscription retry policy: minimum delay before a nacked request returns.",
    )
    etl_retry_max_backoff_s: int = Field(
        600, ge=0, le=600, validation_alias="ETL_RETRY_MAX_BACKOFF_SECONDS",
        description="Subscription retry policy: maximum delay before a nacked request returns.",
    )
    etl_concurrency: int = Field(
        1, ge=1, validation_alias="ETL_CONCURRENCY", description="Runs processed at the same time."
    )
    etl_max_run_s: int = Field(
        4 * 3600, ge=1, validation_alias="ETL_MAX_RUN_SECONDS",
        description="Lease is extended up to this long; a run is cut before it.",
    )
    etl_max_lease_extension_s: int = Field(
        60, ge=10, le=600, validation_alias="ETL_MAX_LEASE_EXTENSION_SECONDS",
        description="Each lease extension at most this long, so a dead worker's message returns quickly.",
    )
    etl_progress_interval_s: float = Field(
        5.0, ge=0, validation_alias="ETL_PROGRESS_INTERVAL_SECONDS",
        description="Minimum time between two run.progress events of one run.",
    )
    etl_incremental_lag_s: float = Field(
        5.0, ge=0, validation_alias="ETL_INCREMENTAL_LAG",
        description="Transactional window ends this long before the source clock (late commits).",
    )
    etl_cdc_wal_warning_bytes: int = Field(
        1 << 30, ge=0, validation_alias="ETL_CDC_WAL_WARNING_BYTES",
        description="A cdc run warns (log and run.completed) when its slot retains more WAL than this.",
    )
    etl_part_rows: int = Field(
        500_000, ge=1, validation_alias="ETL_PART_ROWS",
        description="Rows per Parquet part file uploaded to staging (bounds spool disk).",
    )
    etl_chunk_rows: int = Field(
        1_000_000, ge=0, validation_alias="ETL_CHUNK_ROWS",
        description="A transactional or merge run whose window holds more rows is committed in "
        "consecutive sub-windows of at most this many rows, each durable, so that a failure keeps them "
        "and the redelivery goes on after the last (docs/modes.md); 0: always one commit.",
    )
    etl_spool_dir: str | None = Field(
        None, validation_alias="ETL_SPOOL_DIR", description="Directory for Parquet parts (default: tmp)."
    )
    etl_staging_expiration_s: int = Field(
        86_400, ge=3600, validation_alias="ETL_STAGING_EXPIRATION_SECONDS",
        description="Staging tables expire after this long in case a crash leaves one behind.",
    )
    etl_shutdown_grace_s: float = Field(
        8.0, ge=0, validation_alias="ETL_SHUTDOWN_GRACE_SECONDS",
        description="After SIGTERM, a running run may finish within this time.",
    )
    etl_password_env_prefix: str = Field(
        "ETL_SECRET_", validation_alias="ETL_PASSWORD_ENV_PREFIX",
        description="A request's password_env must start with this (so it cannot name any variable).",
    )
    etl_password_file_dirs: str = Field(
        "/run/secrets", validation_alias="ETL_PASSWORD_FILE_DIRS",
        description="':'-separated directories a request's password_file must lie in.",
    )
    json_logs: bool = Field(True, validation_alias="ETL_JSON_LOGS", description="JSON logs.")
    etl_history: bool = Field(
        True, validation_alias="ETL_HISTORY",
        description="Record every run event but progress in the dataset's _etl_runs table "
        "(worker/history.py).",
    )

    # --- etl-worker notify (worker/commands/notify.py) ---------------------------------------------
    etl_notify_subscription: str = Field(
        "etl-run-events-notify", validation_alias="ETL_NOTIFY_SUBSCRIPTION",
        description="notify's own subscription on the events topic (created if missing).",
    )
    etl_notify_state_dir: str = Field(
        ".etl-notify", validation_alias="ETL_NOTIFY_STATE_DIR",
        description="Directory of notify's state (notify.sqlite3: processed event ids, open incidents).",
    )
    etl_notify_rules_file: str | None = Field(
        None, validation_alias="ETL_NOTIFY_RULES_FILE", description="Alert rules, TOML or JSON."
    )
    etl_notify_retry_min_backoff_s: int = Field(
        10, ge=0, le=600, validation_alias="ETL_NOTIFY_RETRY_MIN_BACKOFF_SECONDS",
        description="notify subscription: minimum delay before an event whose alert failed returns.",
    )
    etl_alert_slack_webhook_url: SecretStr | None = Field(
        None, validation_alias="ETL_ALERT_SLACK_WEBHOOK_URL",
        description="Slack incoming webhook (a secret: never logged or shown).",
    )
    etl_alert_smtp_host: str | None = Field(None, validation_alias="ETL_ALERT_SMTP_HOST")
    etl_alert_smtp_port: int | None = Field(
        None, ge=1, le=65535, validation_alias="ETL_ALERT_SMTP_PORT",
        description="Default: 465 with ssl, 587 with starttls, 25 with none.",
    )
    etl_alert_smtp_security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", validation_alias="ETL_ALERT_SMTP_SECURITY",
        description="starttls (upgrade after connecting), ssl (TLS from the start) or none.",
    )
    etl_alert_smtp_username: str | None = Field(None, validation_alias="ETL_ALERT_SMTP_USERNAME")
    etl_alert_smtp_password: SecretStr | None = Field(None, validation_alias="ETL_ALERT_SMTP_PASSWORD")
    etl_alert_smtp_ca_file: str | None = Field(
        None, validation_alias="ETL_ALERT_SMTP_CA_FILE",
        description="CA bundle for the SMTP server's certificate (default: the system's).",
    )
    etl_alert_email_from: str | None = Field(None, validation_alias="ETL_ALERT_EMAIL_FROM")
    etl_alert_email_to: str | None = Field(
        None, validation_alias="ETL_ALERT_EMAIL_TO", description="Comma-separated recipients."
    )
    etl_alert_timeout_s: float = Field(
        10.0, gt=0, validation_alias="ETL_ALERT_TIMEOUT_SECONDS",
        description="Timeout of one Slack or SMTP send.",
    )
    # --- etl-worker schedule apply (worker/commands/schedules.py) ---------------------------------
    etl_scheduler_location: str | None = Field(
        None, validation_alias="ETL_SCHEDULER_LOCATION",
        description="Cloud Scheduler region of the jobs, e.g. europe-west1.",
    )
    etl_scheduler_job_prefix: str = Field(
        "etl-", validation_alias="ETL_SCHEDULER_JOB_PREFIX",
        description="Cloud Scheduler job ids are this prefix + the schedule file's name; --prune only "
        "deletes jobs with the prefix that publish to the request topic.",
    )
