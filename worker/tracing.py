"""Traces and metrics with OpenTelemetry: off unless the standard OTEL_* variables turn them on.

A run is a trace: the span `etl.run` (one delivery) continues the trace context its publisher
attached to the request (google-cloud-pubsub's `googclient_traceparent` attribute, or a plain W3C
`traceparent`), with children `etl.plan`, `etl.stage` (one per table: extraction and its staging
loads), `etl.commit` and `etl.report`; every BigQuery job the run starts carries the trace id as the
label `etl_trace_id`, so a job in the BigQuery console leads back to its trace.

Metrics (worker/tracing.py's `RunMetrics`, fed from the run's events): `etl.runs` (by outcome, load
type and table), `etl.rows` (rows committed), `etl.run.duration` (seconds), and the gauge
`etl.watermark.age` (seconds between now and each table's newest committed timestamp watermark, a
naive one read as UTC: how stale the destination is).

Configuration, all standard: `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` = `otlp` or `console`
(unset or `none`: nothing is recorded and nothing is paid beyond a no-op call per step), plus the
exporter's own `OTEL_EXPORTER_OTLP_*` variables and `OTEL_SERVICE_NAME` (default `etl-worker`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker import constants as c
from worker.logs import redact
from worker.messages import Event, RunCompleted, RunDeadLettered, RunFailed

SCOPE = "etl-worker"
PUBSUB_PREFIX = "googclient_"  # google-cloud-pubsub's publisher writes its trace context here
TRACE_LABEL = "etl_trace_id"

class TracingSettingsError(ValueError):
    """An OTEL_*_EXPORTER value this worker does not know (the CLI's one-line error)."""


_state: dict[str, Any] = {"tracer_provider": None, "meter_provider": None}


# --- configuration -------------------------------------------------------------------------------
def configure(environ: Mapping[str, str] = os.environ) -> None:
    """Install exporters as OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER say (once per process)."""
    traces, metric_exporter = (environ.get(name, "none").strip().lower()
                               for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"))
    resource = _resource(environ)
    if traces not in ("", "none"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(_span_exporter(traces)))
        use_tracer_provider(provider)
    if metric_exporter not in ("", "none"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_metric_exporter(metric_exporter))
        use_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def use_tracer_provider(provider: Any) -> None:
    """Where this worker's spans go (the tests give an in-memory exporter's provider)."""
    _state["tracer_provider"] = provider


def use_meter_provider(provider: Any) -> None:
    _state["meter_provider"] = provider


def shutdown() -> None:
    """Flush what the exporters still hold (before the process exits)."""
    for key in ("tracer_provider", "meter_provider"):
        provider = _state[key]
        if provider is not None and hasattr(provider, "shutdown"):
            provider.shutdown()


def _resource(environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SCOPE)})


def _span_exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout is `run`'s events
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers... from OTEL_EXPORTER_OTLP_*
    raise TracingSettingsError(f"OTEL_TRACES_EXPORTER={kind!r}: etl-worker knows otlp, console and none")


def _metric_exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stderr)
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    raise TracingSettingsError(f"OTEL_METRICS_EXPORTER={kind!r}: etl-worker knows otlp, console and none")


def _tracer() -> trace.Tracer:
    provider = _state["tracer_provider"]
    return provider.get_tracer(SCOPE) if provider is not None else trace.get_tracer(SCOPE)


def _meter() -> metrics.Meter:
    provider = _state["meter_provider"]
    return provider.get_meter(SCOPE) if provider is not None else metrics.get_meter(SCOPE)


# --- spans ---------------------------------------------------------------------------------------
class _Attributes(Getter[Mapping[str, str]]):
    """Reads a trace context from a message's attributes, the client library's keys first."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(PUBSUB_PREFIX + key, carrier.get(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [key.removeprefix(PUBSUB_PREFIX) for key in carrier]


@contextmanager
def run_span(attributes: Mapping[str, str], **span_attributes: Any) -> Iterator[None]:
    """The delivery's span, continuing the publisher's trace when the message carries one."""
    parent = TraceContextTextMapPropagator().extract(carrier=attributes, getter=_Attributes())
    with _span("etl.run", span_attributes, context=parent, kind=trace.SpanKind.CONSUMER):
        yield


@contextmanager
def step(name: str, **span_attributes: Any) -> Iterator[None]:
    """A step of the run (`etl.<name>`), a child of the current span."""
    with _span(f"etl.{name}", span_attributes):
        yield


@contextmanager
def _span(name: str, span_attributes: Mapping[str, Any], **options: Any) -> Iterator[None]:
    # The SDK's own exception recording would export the raw exception text: a driver's message can
    # hold a secret. The span gets the error's type and its redacted message instead.
    with _tracer().start_as_current_span(name, attributes=_clean(span_attributes), record_exception=False,
                                         set_status_on_exception=False, **options) as span:
        try:
            yield
        except BaseException as exc:
            _mark_error(span, type(exc).__name__, str(exc))
            raise


def note_outcome(event: Event) -> None:
    """The run's outcome on the current span (the delivery's): `etl.outcome`, and an error status
    with the typed error for a failed or dead-lettered run."""
    span = trace.get_current_span()
    if isinstance(event, RunCompleted):
        span.set_attribute("etl.outcome", "committed")
    elif isinstance(event, RunFailed | RunDeadLettered):
        outcome = "dead-lettered" if isinstance(event, RunDeadLettered) else (
            "retrying" if event.will_retry else "failed")
        span.set_attribute("etl.outcome", outcome)
        _mark_error(span, event.error.type, event.error.message)  # already redacted by the events


def _mark_error(span: trace.Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, redact(f"{error_type}: {message}")))


def job_labels() -> dict[str, str]:
    """BigQuery job labels tying a job to the current trace (none when nothing is traced)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {TRACE_LABEL: f"{span_context.trace_id:032x}"}


def trace_attributes() -> dict[str, str]:
    """The current trace context as a W3C `traceparent` attribute (none when nothing is traced):
    the events a run publishes carry it, so a consumer can continue the run's trace."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        TraceContextTextMapPropagator().inject(carrier)
    return carrier


def in_this_context(target: Any) -> Any:
    """`target`, to run on another thread within this thread's trace context (the part loader)."""
    captured = otel_context.get_current()

    def run(*args: Any, **kwargs: Any) -> Any:
        token = otel_context.attach(captured)
        try:
            return target(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    scalars = (str, int, float, bool)
    return {f"etl.{key}": value for key, value in values.items() if isinstance(value, scalars)}


# --- metrics -------------------------------------------------------------------------------------
class RunMetrics:
    """Metrics from the events a worker publishes (an EventBus wrapper feeds it)."""

    def __init__(self, clock: Any = time.time) -> None:
        meter = _meter()
        self._runs = meter.create_counter("etl.runs", description="Run outcomes, by outcome.")
        self._rows = meter.create_counter("etl.rows", unit="{row}", description="Rows committed.")
        self._duration = meter.create_histogram("etl.run.duration", unit="s", description="Run duration.")
        meter.create_observable_gauge("etl.watermark.age", callbacks=[self._ages], unit="s",
                                      description="Seconds since each table's newest committed watermark.")
        self._clock = clock
        self._watermarks: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> None:
        common = {"load_type": event.load_type or "", "dest_table": event.dest_table or ""}
        if isinstance(event, RunCompleted):
            self._runs.add(1, {**common, "outcome": "committed"})
            self._rows.add(event.rows_loaded, common)
            self._duration.record(event.duration_seconds, common)
            self._remember(event)
        elif isinstance(event, RunFailed):
            outcome = "retrying" if event.will_retry else "failed"
            self._runs.add(1, {**common, "outcome": outcome, "error": event.error.type})
        elif isinstance(event, RunDeadLettered):
            self._runs.add(1, {**common, "outcome": "dead-lettered", "error": event.error.type})

    def _remember(self, event: RunCompleted) -> None:
        for table in event.tables or ():
            watermark = _instant(table.watermark)
            if watermark is not None:
                with self._lock:
                    known = self._watermarks.get(table.dest_table)
                    self._watermarks[table.dest_table] = max(known, watermark) if known else watermark

    def _ages(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        with self._lock:
            known = dict(self._watermarks)
        return [Observation((now - moment).total_seconds(), {"dest_table": table})
                for table, moment in known.items()]


class MetricsBus:
    """An EventBus that publishes through `inner`, then counts the event in `metrics` and notes the
    run's outcome on the delivery's span."""

    def __init__(self, inner: Any, metrics_: RunMetrics) -> None:
        self._inner = inner
        self._metrics = metrics_

    def publish(self, event: Event) -> None:
        self._inner.publish(event)
        if event.event_type in (c.RUN_COMPLETED, c.RUN_FAILED, c.RUN_DEAD_LETTERED):
            self._metrics.observe(event)
            note_outcome(event)  # published within the delivery's span


def _instant(text: str | None) -> datetime | None:
    """A timestamp watermark as an instant, a naive one taken as UTC (date and integer watermarks
    have no age)."""
    if not text or ("T" not in text and " " not in text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
