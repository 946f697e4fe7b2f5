"""OpenTelemetry traces, when ``postburner_py[otel]`` is installed and a tracer provider is set.

The worker makes one span per attempt (``postburner.attempt``, kind CONSUMER) with the
occurrence's schedule (its dispatch key), ``run_at``, attempt number, queue and start
lateness, and its outcome when it ends; the job runs inside it, so the job's own spans are
its children. A one-off job enqueued inside a span carries that span's context (W3C
``traceparent``, in its row's ``trace_context``) and its attempts' spans link to it.

Without the ``opentelemetry`` package, or with no tracer provider configured (the API's
default), nothing here costs more than one check when a worker starts or a job is enqueued.
Configure a provider before the worker starts: run it under ``opentelemetry-instrument``, or
set one in code (``trace.set_tracer_provider``), or give :class:`~postburner_py.worker.Worker`
one (``tracer_provider=``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    AVAILABLE = True
except ImportError:  # the otel extra is not installed
    AVAILABLE = False

if TYPE_CHECKING:
    from postburner_py.worker.admission import Occurrence

__all__ = ["SPAN_NAME", "AttemptTracer", "attempt_tracer", "enqueue_context"]

#: The name of every attempt's span.
SPAN_NAME = "postburner.attempt"
#: Outcomes that end a span with an error status.
_ERRORS = frozenset({"retrying", "failed"})


def enqueue_context() -> dict[str, str] | None:
    """The current span's context as a W3C carrier (``traceparent``, maybe ``tracestate``),
    for a one-off job's row; None outside a span or without OpenTelemetry."""
    if not AVAILABLE or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def attempt_tracer(provider: Any = None) -> AttemptTracer | None:
    """An :class:`AttemptTracer` on ``provider`` (default: the global one), or None when
    OpenTelemetry is not installed or no provider is configured (nothing to record)."""
    if not AVAILABLE:
        return None
    provider = provider or trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return AttemptTracer(provider.get_tracer("postburner_py"))


class AttemptTracer:
    """Starts and ends the span of one attempt (see the module docstring)."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def start(self, occurrence: Occurrence, attempt: int, began_at: datetime) -> Any:
        """The attempt's span, started (not current: see :meth:`current`)."""
        lateness = max(0.0, (began_at - occurrence.run_at).total_seconds())
        return self._tracer.start_span(
            SPAN_NAME,
            kind=SpanKind.CONSUMER,
            links=_links(occurrence.trace_context),
            attributes={
                "messaging.system": "beanstalkd",
                "messaging.destination.name": occurrence.queue,
                "postburner.schedule": occurrence.key,
                "postburner.kind": occurrence.kind,
                "postburner.run_at": occurrence.run_at.isoformat(),
                "postburner.attempt": attempt,
                "postburner.lateness_seconds": lateness,
                "postburner.job_class": occurrence.job_class,
            },
        )

    @staticmethod
    def current(span: Any) -> Any:
        """A context manager that makes ``span`` current while the job runs (not ending it)."""
        return trace.use_span(span, end_on_exit=False, record_exception=False)

    @staticmethod
    def end(span: Any, outcome: str, error: BaseException | None) -> None:
        """Record the attempt's outcome (and its exception) and end its span."""
        span.set_attribute("postburner.outcome", outcome)
        if error is not None:
            span.record_exception(error)
        if outcome in _ERRORS:
            span.set_status(Status(StatusCode.ERROR, str(error) if error else outcome))
        span.end()


def _links(carrier: dict[str, str] | None) -> list[Any]:
    """A link to the span ``carrier`` names, when it names a valid one."""
    if not carrier:
        return []
    context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return [Link(context)] if context.is_valid else []
