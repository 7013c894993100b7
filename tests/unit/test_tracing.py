"""The W3C trace context helpers the gateway, the relay and the mailbox rely on."""

from __future__ import annotations

import uuid

import pytest

from actors import tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_trace_id_is_read_from_a_traceparent() -> None:
    assert tracing.trace_id_of(TRACEPARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "traceparent",
    [None, "", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
)
def test_a_missing_or_malformed_traceparent_has_no_trace_id(traceparent: str | None) -> None:
    assert tracing.trace_id_of(traceparent) is None


def test_a_malformed_traceparent_gives_no_parent_context() -> None:
    assert tracing.context_of("00-xyz-abc-01") is None
    assert tracing.context_of(None) is None
    assert tracing.context_of(TRACEPARENT) is not None


def test_outside_any_span_there_are_no_ids() -> None:
    assert tracing.current_ids() is None
    assert tracing.current_traceparent() is None


def test_an_unsampled_event_is_processed_in_its_producers_context_without_spans_of_its_own() -> (
    None
):
    # Given a traceparent whose producer did not sample it (no exporter upstream)
    unsampled = TRACEPARENT[:-2] + "00"
    event, client = uuid.uuid4(), uuid.uuid4()

    # When the mailbox processes it and runs an attempt
    with (
        tracing.processing("q", event, client, 1, unsampled) as span,
        tracing.attempting("demo.echo", 1) as attempt,
    ):
        # Then the producer's ids are current (logs and the journal get its trace id),
        # and neither context made a span of its own
        assert tracing.current_traceparent() == unsampled
        assert attempt is span
        assert not span.is_recording()
    assert tracing.current_traceparent() is None
