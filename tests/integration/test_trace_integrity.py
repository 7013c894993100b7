"""Every span the real gateway and workers export over OTLP/HTTP is one Jaeger can draw:
its resource names the service, its parent is in its trace, its id is unique, and a failed
attempt carries an error status and an exception event. Checked over a workload of plain,
retried and dead events, a relay re-publish and the supervisor's actions, so a new span
anywhere that breaks a trace fails here without a test of its own."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for
from tests.otlp import Receiver, Span

pytestmark = pytest.mark.integration

SERVICES = {"seriatim-gateway", "seriatim-worker"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def exported(
    services: None, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Span]]:
    """Every span of a mixed workload, once every trace it made is complete."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SERIATIM_IDLE_TIMEOUT": "2",  # passivations: supervisor actions
        "SERIATIM_MAX_ATTEMPTS": "2",  # demo.fail of 5 times dies
    }
    with harness.running_system(tmp_path_factory.mktemp("integrity"), env=env) as system:
        traces = workload(system)
        wait_for(lambda: arrived(receiver, traces), 60, "the workload's spans to arrive")
        # A parent may still be in a process's next export batch; if it never comes, the
        # orphan test names the span
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not orphans(snapshot(receiver)), 15, "no orphan spans")
        yield snapshot(receiver)


def workload(system: System) -> set[str]:
    """Plain, retried and dead events, and one the relay publishes; their trace ids."""
    client = system.admin_client("integrity")
    token = system.token(client)
    posted = [
        post(system, token, "demo.echo", {"n": 1}),
        post(system, token, "demo.fail", {"times": 1}),  # fails once, then succeeds
        post(system, token, "demo.fail", {"times": 5}),  # dead after 2 attempts
    ]
    records = [finished(system, token, event["id"]) for event in posted]
    assert [r["status"] for r in records] == ["succeeded", "succeeded", "dead"]
    # An event committed under the first request's trace but never published, as after a
    # gateway crash between commit and publish: the relay publishes it
    server = records[0]["trace_id"]
    relayed = relay_only(system, client["client_id"], records[0])
    assert finished(system, token, relayed)["trace_id"] == server
    return {record["trace_id"] for record in records}


def post(system: System, token: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    return system.post_event(token, type_, payload)


def finished(system: System, token: str, event_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        body = httpx.get(
            f"{system.base_url}/v1/events/{event_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        return dict(body) if body["status"] in ("succeeded", "dead") else None

    return dict(wait_for(read, 60, f"event {event_id} to finish"))


def relay_only(system: System, client_id: str, under: dict[str, Any]) -> str:
    [row] = system.sql("SELECT traceparent FROM events WHERE id = $1::uuid", under["id"])
    [inserted] = system.sql(
        "WITH counter AS (UPDATE clients SET last_seq = last_seq + 1 WHERE id = $1::uuid "
        "RETURNING last_seq) "
        "INSERT INTO events (client_id, seq, type, payload, traceparent, accepted_at) "
        "SELECT $1::uuid, last_seq, 'demo.echo', '{}'::jsonb, $2, now() - interval '1 minute' "
        "FROM counter RETURNING id::text",
        client_id,
        row["traceparent"],
    )
    return str(inserted["id"])


def snapshot(receiver: Receiver) -> list[Span]:
    with receiver._lock:
        return list(receiver.spans)


def arrived(receiver: Receiver, traces: set[str]) -> bool:
    """The workload's attempt spans (2 + 1 + 2) and a passivation have been exported."""
    names = collections.Counter(span.name for span in snapshot(receiver) if span.trace_id in traces)
    passivated = receiver.named("seriatim.supervisor passivate")
    return names["seriatim.handler attempt"] >= 5 and bool(passivated)


def orphans(spans: list[Span]) -> list[Span]:
    ids = {(span.trace_id, span.span_id) for span in spans}
    return [span for span in spans if span.parent_id and (span.trace_id, span.parent_id) not in ids]


def test_every_resource_names_its_service(exported: list[Span]) -> None:
    assert {span.service for span in exported} <= SERVICES
    assert {span.service for span in exported} == SERVICES


def test_no_span_has_a_parent_missing_from_its_trace(exported: list[Span]) -> None:
    """Planted (the relay's send span started under a made-up parent), this fails naming
    `seriatim.mailbox send`."""
    assert [(span.service, span.name) for span in orphans(exported)] == []
    kinds = {span.name for span in exported}
    assert {"seriatim.mailbox send", "seriatim.supervisor restart"} <= kinds  # relay, retries


def test_span_ids_are_unique(exported: list[Span]) -> None:
    counts = collections.Counter(span.span_id for span in exported)
    assert [span_id for span_id, n in counts.items() if n > 1] == []


def test_every_failed_attempt_has_an_error_status_and_an_exception_event(
    exported: list[Span],
) -> None:
    attempts = [span for span in exported if span.name == "seriatim.handler attempt"]
    failed = [span for span in attempts if span.error]

    assert len(failed) == 3  # one of the retried event, two of the dead one
    for span in failed:
        [(_, attributes)] = [event for event in span.events if event[0] == "exception"]
        assert attributes["exception.type"], span
        assert "exception.message" in attributes, span
    assert all(not span.events for span in attempts if not span.error)
