"""One trace per event, exported over OTLP by the real gateway and workers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for
from tests.otlp import Receiver, Span

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(
    services: None, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SERIATIM_IDLE_TIMEOUT": "2",
    }
    with harness.running_system(tmp_path_factory.mktemp("traced"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def token(traced: System) -> str:
    return traced.token(traced.admin_client("traced"))


def post(system: System, token: str, type_: str, payload: dict[str, Any]) -> httpx.Response:
    response = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": type_, "payload": payload},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response


def finished(system: System, token: str, event_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        response = httpx.get(
            f"{system.base_url}/v1/events/{event_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        body = dict(response.json())
        return body if body["status"] in ("succeeded", "dead") else None

    return dict(wait_for(read, 60, f"event {event_id} to finish"))


def spans_of(receiver: Receiver, trace_id: str, needed: dict[str, int]) -> list[Span]:
    """The trace's spans once it holds at least `needed[name]` spans of each name."""

    def complete() -> list[Span] | None:
        spans = receiver.trace(trace_id)
        names = [span.name for span in spans]
        return spans if all(names.count(n) >= k for n, k in needed.items()) else None

    return list(wait_for(complete, 30, f"spans {needed} in trace {trace_id}"))


def one(spans: list[Span], name: str) -> Span:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def test_one_post_gives_one_trace_from_the_request_to_the_database(
    traced: System, receiver: Receiver, token: str
) -> None:
    # When a client posts one event and it is processed
    response = post(traced, token, "demo.echo", {"order": 1})
    accepted = response.json()
    record = finished(traced, token, accepted["id"])

    # Then the trace id in the response header is the one stored with the event
    trace_id = response.headers["trace-id"]
    assert len(trace_id) == 32
    assert record["trace_id"] == trace_id

    # And that trace holds the server, producer, consumer, handler and database spans
    spans = spans_of(
        receiver,
        trace_id,
        {
            "POST /v1/events": 1,
            "seriatim.mailbox send": 1,
            "seriatim.mailbox process": 1,
            "seriatim.handler attempt": 1,
            "postgresql accept_event": 1,
            "postgresql record_outcomes": 1,
        },
    )
    server = one(spans, "POST /v1/events")
    producer = one(spans, "seriatim.mailbox send")
    consumer = one(spans, "seriatim.mailbox process")
    attempt = one(spans, "seriatim.handler attempt")
    accept = one(spans, "postgresql accept_event")
    outcome = one(spans, "postgresql record_outcomes")

    assert (server.kind, server.service, server.parent_id) == ("SERVER", "seriatim-gateway", "")
    assert server.attributes["http.route"] == "/v1/events"
    assert server.attributes["http.response.status_code"] == 202
    assert server.attributes["seriatim.client_id"] == accepted["client_id"]
    assert server.attributes["seriatim.event_id"] == accepted["id"]
    assert (accept.kind, accept.parent_id) == ("CLIENT", server.span_id)
    assert accept.attributes["db.system"] == "postgresql"
    assert (producer.kind, producer.parent_id) == ("PRODUCER", server.span_id)
    assert (consumer.kind, consumer.parent_id) == ("CONSUMER", producer.span_id)
    assert consumer.service == "seriatim-worker"
    assert consumer.links == [(trace_id, producer.span_id)]
    queue = traced.settings_queue(accepted["client_id"])
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.destination.name"] == queue
    assert consumer.attributes["messaging.message.id"] == accepted["id"]
    assert consumer.attributes["seriatim.client_id"] == accepted["client_id"]
    assert consumer.attributes["seriatim.seq"] == accepted["seq"]
    assert consumer.attributes["seriatim.attempt"] == 1
    assert consumer.attributes["seriatim.queue_wait_s"] >= 0
    assert (attempt.kind, attempt.parent_id, attempt.error) == ("INTERNAL", consumer.span_id, False)
    assert (outcome.kind, outcome.parent_id) == ("CLIENT", consumer.span_id)

    # And no span name carries a client id or an event id
    for span in spans:
        assert accepted["client_id"] not in span.name
        assert accepted["id"] not in span.name


def test_a_retried_event_shows_each_attempt_in_its_trace(
    traced: System, receiver: Receiver, token: str
) -> None:
    # When an event fails twice and then succeeds
    response = post(traced, token, "demo.fail", {"times": 2})
    record = finished(traced, token, response.json()["id"])
    assert (record["status"], record["attempts"]) == ("succeeded", 3)

    # Then its trace has three attempt spans under the consumer span, the first two failed
    spans = spans_of(
        receiver,
        record["trace_id"],
        {
            "seriatim.handler attempt": 3,
            "seriatim.supervisor restart": 2,
            "seriatim.mailbox process": 1,  # ends after its attempts: maybe a later batch
        },
    )
    consumer = one(spans, "seriatim.mailbox process")
    attempts = [span for span in spans if span.name == "seriatim.handler attempt"]
    assert [span.attributes["seriatim.attempt"] for span in attempts] == [1, 2, 3]
    assert [span.error for span in attempts] == [True, True, False]
    assert all(span.parent_id == consumer.span_id for span in attempts)
    assert [name for name, _ in attempts[0].events] == ["exception"]
    assert attempts[0].events[0][1]["exception.type"]
    assert consumer.attributes["seriatim.attempt"] == 3
    restarts = [span for span in spans if span.name == "seriatim.supervisor restart"]
    assert all(span.parent_id == consumer.span_id for span in restarts)


def test_supervisor_actions_are_spans_linked_to_the_event_that_caused_them(
    traced: System, receiver: Receiver
) -> None:
    # Given a new client, whose first event activates its mailbox
    token = traced.token(traced.admin_client("lifecycle"))
    response = post(traced, token, "demo.echo", {})
    record = finished(traced, token, response.json()["id"])
    trace_id = record["trace_id"]
    server = one(spans_of(receiver, trace_id, {"POST /v1/events": 1}), "POST /v1/events")
    consumer = one(
        spans_of(receiver, trace_id, {"seriatim.mailbox process": 1}), "seriatim.mailbox process"
    )

    def linked(name: str, span_id: str) -> Span | None:
        for span in receiver.named(name):
            if (trace_id, span_id) in span.links:
                return span
        return None

    # Then the activation links to the request that wanted the mailbox
    activate = wait_for(lambda: linked("seriatim.supervisor activate", server.span_id), 30, "")
    assert activate.attributes["seriatim.client_id"] == record["client_id"]
    assert activate.trace_id != trace_id  # an action of its own, linked, not a child

    # And the passivation after the idle timeout links to the last event processed
    passivate = wait_for(
        lambda: linked("seriatim.supervisor passivate", consumer.span_id), 30, "a passivation"
    )
    assert passivate.attributes["seriatim.client_id"] == record["client_id"]


def test_an_event_left_to_the_outbox_relay_stays_in_the_trace_of_its_request(
    traced: System, receiver: Receiver
) -> None:
    # Given an event committed under a request's trace but never published (as after a
    # gateway crash between commit and publish)
    client = traced.admin_client("relayed")
    trace_id, request_span = secrets.token_hex(16), secrets.token_hex(8)
    [row] = traced.sql(
        "WITH counter AS (UPDATE clients SET last_seq = last_seq + 1 WHERE id = $1::uuid "
        "RETURNING last_seq) "
        "INSERT INTO events (client_id, seq, type, payload, traceparent, accepted_at) "
        "SELECT $1::uuid, last_seq, 'demo.echo', '{}'::jsonb, $2, now() - interval '1 minute' "
        "FROM counter RETURNING id::text",
        client["client_id"],
        f"00-{trace_id}-{request_span}-01",
    )

    # When the relay (or the mailbox, from the journal) gets it processed
    token = traced.token(client)
    record = finished(traced, token, row["id"])

    # Then its processing is in the request's trace, under the request's span
    assert record["trace_id"] == trace_id
    consumer = one(
        spans_of(receiver, trace_id, {"seriatim.mailbox process": 1}), "seriatim.mailbox process"
    )

    def with_parent() -> list[Span] | None:  # a relay's send span may come in a later batch
        spans = receiver.trace(trace_id)
        ids = {request_span} | {span.span_id for span in spans}
        return spans if consumer.parent_id in ids else None

    spans = list(wait_for(with_parent, 30, "the consumer span's parent to arrive"))
    sends = [span for span in spans if span.name == "seriatim.mailbox send"]
    parents = {request_span} | {send.span_id for send in sends}
    assert consumer.parent_id in parents
    assert all(send.parent_id == request_span for send in sends)
