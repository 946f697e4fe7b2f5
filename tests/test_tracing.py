"""OpenTelemetry spans: one per attempt, with the occurrence's facts, linked to the span that
enqueued a one-off job. Spans are recorded in memory by a tracer provider given to the worker
(the global provider stays untouched), against real PostgreSQL, SQLite and Beanstalkd.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

from postburner_py import Postburner
from postburner_py.store.models import DelayedJob
from postburner_py.tracing import SPAN_NAME, attempt_tracer, enqueue_context
from postburner_py.worker.process import Worker
from tests import jobs
from tests.test_worker import _due_soon, _wait_for
from tests.test_worker_faults import running_worker

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_an_attempt_span_carries_the_occurrence_and_links_to_the_enqueuing_span(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    provider, exporter = _recording()
    with provider.get_tracer("app").start_as_current_span("checkout") as enqueuing:
        pb.enqueue_at(datetime.now(UTC), "tests.jobs:record_run", ["linked"], job_id="traced")
    pb.enqueue_at(datetime.now(UTC), "tests.jobs:always_fail", job_id="untraced", max_attempts=1)
    with pb.session() as session:
        carriers = dict(session.execute(select(DelayedJob.job_id, DelayedJob.trace_context)).all())
    assert carriers["untraced"] is None and "traceparent" in carriers["traced"]
    Worker(pb, burst=True, tracer_provider=provider).run()
    spans = {
        span.attributes["postburner.schedule"]: span
        for span in exporter.get_finished_spans()
        if span.name == SPAN_NAME
    }
    assert set(spans) == {"job:traced", "job:untraced"}
    traced, untraced = spans["job:traced"], spans["job:untraced"]
    assert traced.kind is SpanKind.CONSUMER
    assert traced.attributes["postburner.attempt"] == 1
    assert traced.attributes["postburner.outcome"] == "completed"
    assert traced.attributes["messaging.destination.name"] == "default"
    assert 0 <= traced.attributes["postburner.lateness_seconds"] < 30
    datetime.fromisoformat(str(traced.attributes["postburner.run_at"]))
    [link] = traced.links
    assert link.context.span_id == enqueuing.get_span_context().span_id
    assert link.context.trace_id == enqueuing.get_span_context().trace_id
    assert not untraced.links
    assert untraced.status.status_code is StatusCode.ERROR
    assert untraced.attributes["postburner.outcome"] == "failed"
    assert [event.name for event in untraced.events] == ["exception"]


def test_a_scheduled_occurrence_gets_a_span_the_job_runs_inside(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    provider, exporter = _recording()
    marker = uuid.uuid4().hex
    execution = _due_soon(pb, job_class="tests.jobs:record_current_span", args=[marker])
    with running_worker(pb, tracer_provider=provider):
        _wait_for(lambda: len(exporter.get_finished_spans()) >= 1, timeout=30)
    [attempt] = exporter.get_finished_spans()
    assert attempt.name == SPAN_NAME
    assert attempt.attributes["postburner.schedule"] == execution.cached_schedule["name"]
    assert attempt.attributes["postburner.kind"] == "execution"
    assert attempt.attributes["postburner.outcome"] == "completed"
    assert not attempt.links
    # The job ran inside its attempt's span: its own spans are the attempt's children.
    assert jobs.CURRENT_SPANS[marker].span_id == attempt.context.span_id


def test_nothing_is_traced_or_carried_without_a_configured_provider() -> None:
    # The API's default provider records nothing: no tracer, no context to store.
    assert attempt_tracer() is None
    assert enqueue_context() is None
