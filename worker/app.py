"""Wiring: build the worker's parts from Settings. The CLI calls these; nothing here decides policy."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from worker.events import EventBus, PubSubEventBus
from worker.handlers.base import Redelivery
from worker.handlers.etl_run_requested import EtlRunRequestedHandler
from worker.history import recording
from worker.retry import RetryPolicy
from worker.runner import Runner, RunOptions
from worker.secrets import SecretResolver
from worker.settings import Settings
from worker.sinks.bigquery import BigQuerySink
from worker.sinks.bigquery_client import make_bigquery_client
from worker.sources import get_source
from worker.tracing import MetricsBus, RunMetrics

if TYPE_CHECKING:
    from worker.subscriber import Worker


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(max_tries=settings.etl_max_retries, first_delay_s=settings.etl_retry_delay_s)


def build_sink(settings: Settings) -> BigQuerySink:
    client = make_bigquery_client(settings.gcp_project_id, settings.bigquery_emulator_host)
    return BigQuerySink.from_settings(settings, client)


def build_runner(settings: Settings) -> Runner:
    options = RunOptions(
        batch_rows=settings.etl_batch_size,
        part_rows=settings.etl_part_rows,
        incremental_lag_s=settings.etl_incremental_lag_s,
        max_run_s=settings.etl_max_run_s,
        spool_dir=settings.etl_spool_dir,
        cdc_wal_warning_bytes=settings.etl_cdc_wal_warning_bytes,
        chunk_rows=settings.etl_chunk_rows,
    )
    sources = functools.partial(get_source, secrets=SecretResolver.from_settings(settings))
    return Runner(build_sink(settings), sources, options, retry_policy(settings))


def build_handler(
    settings: Settings, bus: EventBus, redelivery: Redelivery | None = None
) -> EtlRunRequestedHandler:
    """`redelivery`: what a nack leads to (default: the worker subscription's policy, as `setup`
    makes it)."""
    policy = redelivery or Redelivery(
        max_delivery_attempts=settings.etl_max_delivery_attempts,
        dead_letter_topic=settings.etl_dead_letter_topic,
    )
    return EtlRunRequestedHandler(build_runner(settings), bus, settings.etl_progress_interval_s, policy)


def worker_bus(settings: Settings, inner: EventBus) -> EventBus:
    """`inner`, with every run's outcome counted in the metrics (worker/tracing.py) and recorded
    in the run history (worker/history.py)."""
    return recording(settings, MetricsBus(inner, RunMetrics()))


def build_worker(settings: Settings, bus: EventBus | None = None) -> Worker:
    """`bus`: where events go (default: the events topic, recorded in the history)."""
    # Imported here: the one-shot `run` never subscribes, and never pays for the Pub/Sub client.
    from google.cloud import pubsub_v1

    from worker.subscriber import Worker

    bus = bus or worker_bus(settings, PubSubEventBus(settings.gcp_project_id, settings.etl_events_topic))
    subscription = pubsub_v1.SubscriberClient.subscription_path(
        settings.gcp_project_id, settings.etl_request_subscription)
    return Worker(
        subscription,
        build_handler(settings, bus),
        concurrency=settings.etl_concurrency,
        max_run_s=settings.etl_max_run_s,
        max_lease_extension_s=settings.etl_max_lease_extension_s,
        shutdown_grace_s=settings.etl_shutdown_grace_s,
    )
