"""A run is one trace: the worker continues the trace its publisher attached to the request, its
steps are child spans, its BigQuery jobs carry the trace id as a label, its events carry the trace
context on, and its outcome is counted in the metrics. Real emulators, an in-memory exporter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import bigquery
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.e2e.sources import SeededSource
from tests.e2e.stack import Stack, serving
from worker import app, tracing
from worker.sinks import bigquery_client

JOBS_PATH = "/jobs"


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None, "no metrics were recorded"
        return [point for resource in data.resource_metrics for scope in resource.scope_metrics
                for m in scope.metrics if m.name == metric for point in m.data.data_points]


def children(telemetry: Telemetry, parent: ReadableSpan) -> list[ReadableSpan]:
    """`parent`'s child spans, in the order they started."""
    assert parent.context is not None
    found = [s for s in telemetry.spans.get_finished_spans()
             if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: s.start_time or 0)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    tracing.use_tracer_provider(recorded.tracer_provider)
    tracing.use_meter_provider(recorded.meter_provider)
    yield recorded
    tracing.use_tracer_provider(None)
    tracing.use_meter_provider(None)


@pytest.fixture
def job_configurations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The configuration of every BigQuery job the worker starts, as sent over the wire (the
    emulator accepts job labels but never returns them: docs/bigquery-emulator.md)."""
    sent: list[dict[str, Any]] = []
    real = bigquery_client.make_bigquery_client  # what worker.app calls, before the patch

    def recording_client(*args: Any, **kwargs: Any) -> bigquery.Client:
        client = real(*args, **kwargs)

        def remember(response: Any, *_args: Any, **_kwargs: Any) -> None:
            request = response.request
            path = request.path_url.split("?")[0]
            if request.method == "POST" and path.endswith(JOBS_PATH) and request.body:
                sent.append(json.loads(request.body)["configuration"])

        client._http.hooks["response"].append(remember)
        return client

    monkeypatch.setattr(app, "make_bigquery_client", recording_client)
    return sent


@pytest.mark.parametrize("orders_source", ["postgresql"], indirect=True)
def test_a_run_continues_its_publishers_trace_and_labels_its_jobs_and_events(
    stack: Stack, orders_source: SeededSource, telemetry: Telemetry,
    job_configurations: list[dict[str, Any]],
) -> None:
    # Given a publisher (Django) that traces: its span's context rides on the request, under the key
    # google-cloud-pubsub's own OpenTelemetry publisher uses
    publisher = telemetry.tracer_provider.get_tracer("django")
    with publisher.start_as_current_span("django.request_etl_run") as parent:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    trace_id = parent.get_span_context().trace_id
    with serving(stack.settings):
        stack.publish(orders_source.request("catalog", etl_run_id=811),
                      googclient_traceparent=carrier["traceparent"])
        (completed,) = stack.wait_terminal("etl-run-811")
    assert completed["event_type"] == "run.completed", completed

    # Then the delivery's span is a child of the publisher's, in the same trace
    (run,) = telemetry.finished("etl.run")
    assert run.context.trace_id == trace_id
    assert run.parent is not None and run.parent.span_id == parent.get_span_context().span_id
    assert run.attributes is not None and run.attributes["etl.run_id"] == "etl-run-811"
    # And each step is a child of the run's span, in order
    assert [s.name for s in children(telemetry, run)] == ["etl.plan", "etl.stage", "etl.commit", "etl.report"]
    (stage,) = telemetry.finished("etl.stage")
    assert stage.attributes is not None and stage.attributes["etl.dest_table"] == "orders"
    # And within the table's stage: extraction, whose part loads (on the loader thread) are its
    # children, then the checks
    assert [s.name for s in children(telemetry, stage)] == ["etl.extract", "etl.check"]
    (extract,) = telemetry.finished("etl.extract")
    assert [s.name for s in children(telemetry, extract)] == ["etl.load"] * 2  # 250 rows, parts of 150

    # And every job the run started (staging loads from the loader thread, the commit script) carries
    # the trace id, so a job in the BigQuery console leads back to this trace
    kinds = {next(iter(k for k in config if k in ("load", "query"))) for config in job_configurations}
    assert kinds == {"load", "query"}
    labels = {"etl_trace_id": f"{trace_id:032x}"}
    assert all(config.get("labels") == labels for config in job_configurations), job_configurations

    # And the events carry the trace context on (a consumer can continue the trace)
    run_events = [e for e in stack.events if e["run_id"] == "etl-run-811"]
    assert run_events
    for event in run_events:
        traceparent = event["_attributes"].get("traceparent", "")
        assert traceparent.split("-")[1] == f"{trace_id:032x}", event

    # And the metrics count one committed run and its rows
    (runs,) = telemetry.points("etl.runs")
    assert runs.value == 1 and runs.attributes["outcome"] == "committed"
    (rows,) = telemetry.points("etl.rows")
    assert rows.value == 250 == completed["rows_loaded"]
    (duration,) = telemetry.points("etl.run.duration")
    assert duration.count == 1
