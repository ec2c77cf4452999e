"""Traces and metrics on the in-memory rig: which spans a delivery makes, which trace it continues,
and what the metrics count for each outcome (tests/e2e/test_tracing.py: the same over Pub/Sub)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.unit.stubs import Rig, delivery, request
from worker import tracing
from worker.errors import SourceAuthError, SourceConnectionError
from worker.handlers.base import Delivery
from worker.handlers.etl_run_requested import EtlRunRequestedHandler
from worker.sources.memory import Failure

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(None)


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    metric_reader = InMemoryMetricReader()
    tracing.use_meter_provider(MeterProvider(metric_readers=[metric_reader]))
    yield metric_reader
    tracing.use_meter_provider(None)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [point for resource in data.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics if metric.name == name for point in metric.data.data_points]


def metered_handler(rig: Rig, clock: Any = None) -> EtlRunRequestedHandler:
    metrics = tracing.RunMetrics(clock) if clock else tracing.RunMetrics()
    return EtlRunRequestedHandler(rig.runner(), tracing.MetricsBus(rig.bus, metrics), progress_interval_s=0)


def with_attributes(message: Delivery, **attributes: str) -> Delivery:
    return Delivery(data=message.data, message_id=message.message_id, attributes=attributes)


def test_a_plain_w3c_traceparent_is_continued(rig: Rig, spans: InMemorySpanExporter) -> None:
    traceparent = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
    message = with_attributes(delivery(request(etl_run_id=5)), traceparent=traceparent)
    rig.handler().handle(message, threading.Event())
    (run,) = [s for s in spans.get_finished_spans() if s.name == "etl.run"]
    assert f"{run.context.trace_id:032x}" == PARENT_TRACE
    assert run.parent is not None and f"{run.parent.span_id:016x}" == PARENT_SPAN


def test_a_request_without_a_trace_starts_one_with_its_steps_as_children(
    rig: Rig, spans: InMemorySpanExporter
) -> None:
    rig.handler().handle(delivery(request(etl_run_id=5)), threading.Event())
    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name == "etl.run"]
    assert run.parent is None
    children = [s.name for s in finished if s.parent is not None and s.parent.span_id == run.context.span_id]
    assert sorted(children) == ["etl.commit", "etl.plan", "etl.report", "etl.stage"]
    names = [s.name for s in finished]
    assert names.count("etl.extract") == names.count("etl.check") == 1
    assert names.count("etl.load") == 3  # 10 rows in parts of 4
    assert all(s.context.trace_id == run.context.trace_id for s in finished)


def test_job_labels_and_event_attributes_carry_the_current_trace_only(spans: InMemorySpanExporter) -> None:
    assert tracing.job_labels() == {} and tracing.trace_attributes() == {}
    with tracing.run_span({}), tracing.step("commit"):
        labels, attributes = tracing.job_labels(), tracing.trace_attributes()
    (run,) = [s for s in spans.get_finished_spans() if s.name == "etl.run"]
    trace_id = f"{run.context.trace_id:032x}"
    assert labels == {"etl_trace_id": trace_id}
    assert attributes["traceparent"].split("-")[1] == trace_id


def test_another_thread_runs_in_the_context_that_made_it(spans: InMemorySpanExporter) -> None:
    seen: list[dict[str, str]] = []
    with tracing.run_span({}):
        expected = tracing.job_labels()
        thread = threading.Thread(target=tracing.in_this_context(lambda: seen.append(tracing.job_labels())))
        thread.start()
        thread.join()
    assert seen == [expected] and expected


def test_a_committed_run_counts_its_outcome_rows_and_duration(rig: Rig, reader: InMemoryMetricReader) -> None:
    metered_handler(rig).handle(delivery(request(etl_run_id=5)), threading.Event())
    (runs,) = points(reader, "etl.runs")
    assert (runs.value, dict(runs.attributes)) == (
        1, {"outcome": "committed", "load_type": "catalog", "dest_table": "bq_orders"})
    (rows,) = points(reader, "etl.rows")
    assert rows.value == 10
    (duration,) = points(reader, "etl.run.duration")
    assert duration.count == 1


@pytest.mark.parametrize(("failure", "outcome"), [
    (SourceConnectionError("connection refused"), "retrying"),
    (SourceAuthError("password authentication failed"), "failed"),
])
def test_a_failed_delivery_counts_whether_it_will_be_retried(
    rig: Rig, reader: InMemoryMetricReader, failure: Exception, outcome: str
) -> None:
    rig.source.failures = [Failure(failure, step="open")] * 3
    metered_handler(rig).handle(delivery(request()), threading.Event())
    (runs,) = points(reader, "etl.runs")
    assert runs.attributes["outcome"] == outcome
    assert runs.attributes["error"] == type(failure).__name__
    assert points(reader, "etl.rows") == []


def test_the_watermark_age_is_the_time_since_the_newest_committed_watermark(
    rig: Rig, reader: InMemoryMetricReader
) -> None:
    # Given a transactional run whose newest row was updated at T0 + 10 minutes
    now = rig.clock.now + timedelta(hours=1)
    metered_handler(rig, clock=now.timestamp).handle(
        delivery(request("transactional", etl_run_id=5)), threading.Event())
    (completed,) = [e for e in rig.bus.events if e.event_type == "run.completed"]
    assert completed.watermark is not None
    # Then the gauge says how long ago that was, per destination table
    (age,) = points(reader, "etl.watermark.age")
    newest = tracing._instant(completed.watermark)
    assert newest is not None
    assert (age.value, dict(age.attributes)) == ((now - newest).total_seconds(), {"dest_table": "bq_orders"})


@pytest.mark.parametrize(("text", "has_age"), [
    ("2024-05-01T12:10:00+00:00", True), ("2024-05-01 12:10:00", True),  # naive: read as UTC
    ("2024-05-01", False), ("42", False), (None, False), ("not a time", False),
])
def test_only_timestamp_watermarks_have_an_age(text: str | None, has_age: bool) -> None:
    assert (tracing._instant(text) is not None) is has_age


@pytest.mark.parametrize("variable", ["OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"])
def test_an_unknown_exporter_is_a_settings_error_naming_the_variable(variable: str) -> None:
    with pytest.raises(tracing.TracingSettingsError, match=f"{variable}='zipkin'"):
        tracing.configure({variable: "zipkin"})
    tracing.shutdown()
    tracing.use_tracer_provider(None)
    tracing.use_meter_provider(None)


def test_nothing_is_installed_unless_an_exporter_is_chosen() -> None:
    tracing.configure({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.job_labels() == {}
    with tracing.run_span({}):
        assert tracing.job_labels() == {}  # the no-op tracer: no trace, no labels


def test_a_failing_step_and_its_run_carry_the_typed_error_with_secrets_redacted(
    rig: Rig, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    # Given a source whose error text holds the request's password
    secret = "hunter2-never-exported"
    rig.source.failures = [Failure(SourceAuthError(f"password {secret} rejected"), after_batches=1)]
    body = request().model_dump(mode="json", exclude_none=True)
    body["connection_params"]["password"] = secret  # (a dumped SecretStr would be its mask)
    metered_handler(rig).handle(delivery(json.dumps(body).encode()), threading.Event())
    finished = {s.name: s for s in spans.get_finished_spans()}
    stage, run = finished["etl.stage"], finished["etl.run"]
    # Then the step that failed and the delivery's span both say which error, without the secret
    for span in (stage, run):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "SourceAuthError"
        assert span.status.description is not None and "SourceAuthError: password" in span.status.description
        assert secret not in span.status.description, span.name
        assert not span.events  # no raw exception recorded
    assert run.attributes is not None and run.attributes["etl.outcome"] == "failed"
