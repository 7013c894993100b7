"""The W3C trace context helpers the gateway, the relay and the mailbox rely on."""

from __future__ import annotations

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
