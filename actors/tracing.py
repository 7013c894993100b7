"""OpenTelemetry tracing: the provider set up from the standard OTEL_* variables, and the
spans every event's trace is made of (publish, process, attempt, supervisor actions).

Span names stay low-cardinality: a client id, event id or queue name is an attribute, never
part of a name. Without OTEL_EXPORTER_OTLP_ENDPOINT (or …_TRACES_ENDPOINT) spans are still
made, so that trace ids reach logs, response headers and the journal, but nothing is exported;
and unless OTEL_TRACES_SAMPLER says otherwise they are not recorded either (a parent-based
always-off sampler): a recorded span costs ~25 µs, a non-recording one almost nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

_TRACER = "seriatim"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: With nowhere to export to: trace ids and context still flow, spans are not recorded.
_NOT_RECORDED = ParentBased(ALWAYS_OFF)


def configure(service_name: str) -> TracerProvider | None:
    """Install the process's tracer provider; None when OTEL_SDK_DISABLED is true.

    Sampler, resource attributes, batching and the exporter's endpoint, headers and timeout
    all come from the SDK's own handling of the OTEL_* variables.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    exporter_wanted = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    exporting = exporter_wanted and any(os.environ.get(name) for name in _ENDPOINTS)
    sampler = None if exporting or os.environ.get("OTEL_TRACES_SAMPLER") else _NOT_RECORDED
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


@functools.cache
def tracer() -> trace.Tracer:
    """The process's one tracer: asking the provider for it on every span cost ~4% of the
    gateway's CPU. Taken before a provider is set, it is a proxy that follows the provider."""
    return trace.get_tracer(_TRACER)


# --- W3C trace context in messages -------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None outside any recording span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> context.Context | None:
    """The remote context a `traceparent` names; None when it is missing or malformed."""
    if not traceparent:
        return None
    remote = propagate.extract({"traceparent": traceparent})
    return remote if trace.get_current_span(remote).get_span_context().is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex-digit trace id in a `traceparent`, or None."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span in hex, or None when there is none."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def annotate(**attributes: str | int) -> None:
    """Add `seriatim.<name>` attributes to the current span (the request's, say)."""
    span = trace.get_current_span()
    for name, value in attributes.items():
        span.set_attribute(f"seriatim.{name}", value)


# --- the spans of an event -------------------------------------------------------------------


def _messaging(queue: str, event_id: uuid.UUID, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "messaging.rabbitmq.destination.routing_key": queue,
        "messaging.message.id": str(event_id),
    }


@contextlib.contextmanager
def publishing(
    queue: str, event_id: uuid.UUID, client_id: uuid.UUID, seq: int, parent: str | None
) -> Iterator[Span]:
    """A PRODUCER span around publishing an event, a child of the event's own context
    (`parent`, the traceparent stored with it) when it has one."""
    attributes = _messaging(queue, event_id, "send")
    attributes |= {"seriatim.client_id": str(client_id), "seriatim.seq": seq}
    with tracer().start_as_current_span(
        "seriatim.mailbox send",
        context=context_of(parent),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        yield span


@contextlib.contextmanager
def processing(
    queue: str,
    event_id: uuid.UUID,
    client_id: uuid.UUID,
    seq: int,
    traceparent: str | None,
) -> Iterator[Span]:
    """The CONSUMER span of processing one event: a child of the producer's context and
    linked to it, as the OpenTelemetry messaging conventions describe."""
    parent = context_of(traceparent)
    if parent is not None and not _sampled(parent) and _parent_based():
        # Under a parent-based sampler (the SDK's default, and ours without an exporter) this
        # span would not be recorded: the producer's context alone carries the trace id to the
        # logs and the journal, for a tenth of the cost of a span of its own.
        token = context.attach(parent)
        try:
            yield trace.get_current_span(parent)
        finally:
            context.detach(token)
        return
    links = []
    if parent is not None:
        links.append(Link(trace.get_current_span(parent).get_span_context()))
    attributes = _messaging(queue, event_id, "process")
    attributes |= {"seriatim.client_id": str(client_id), "seriatim.seq": seq}
    with tracer().start_as_current_span(
        "seriatim.mailbox process",
        context=parent if parent is not None else context.Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ) as span:
        yield span


def _sampled(parent: context.Context) -> bool:
    return bool(trace.get_current_span(parent).get_span_context().trace_flags.sampled)


def _parent_based() -> bool:
    """Whether the process's sampler follows the parent's decision (the SDK's default and
    ours): only then is an unsampled parent's child certain not to be recorded."""
    return isinstance(getattr(trace.get_tracer_provider(), "sampler", None), ParentBased)


@contextlib.contextmanager
def attempting(event_type: str, attempt: int) -> Iterator[Span]:
    """An INTERNAL span around one handler attempt (none inside an unrecorded span)."""
    current = trace.get_current_span()
    if not current.is_recording():
        yield current
        return
    with tracer().start_as_current_span(
        "seriatim.handler attempt",
        attributes={"seriatim.event_type": event_type, "seriatim.attempt": attempt},
        record_exception=False,
        set_status_on_exception=True,
    ) as span:
        yield span


def failed(span: Span, kind: str, message: str) -> None:
    """Record a failed attempt on its span: error status and an `exception` event."""
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"[:300]))
    span.set_attribute("error.type", kind)
    span.add_event("exception", {"exception.type": kind, "exception.message": message[:2000]})


@contextlib.contextmanager
def restarting(attempt: int, backoff: float) -> Iterator[float]:
    """A span for restarting a failed event in place: the backoff before the next attempt."""
    with tracer().start_as_current_span(
        "seriatim.supervisor restart",
        attributes={
            "seriatim.action": "restart",
            "seriatim.attempt": attempt,
            "seriatim.backoff_s": round(backoff, 3),
        },
    ):
        yield backoff


@contextlib.contextmanager
def supervising(action: str, client_id: uuid.UUID, cause: str | None = None) -> Iterator[Span]:
    """A span for a supervisor action (activate, restart, passivate, suspend), linked to the
    trace of the event that caused it when `cause` (its traceparent) is known."""
    links = []
    remote = context_of(cause)
    if remote is not None:
        links.append(Link(trace.get_current_span(remote).get_span_context()))
    with tracer().start_as_current_span(
        f"seriatim.supervisor {action}",
        context=context.Context(),  # a root of its own: actions outlive the events
        links=links,
        attributes={"seriatim.client_id": str(client_id), "seriatim.action": action},
    ) as span:
        yield span
