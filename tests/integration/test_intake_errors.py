"""Every input error of the contract: its status, a problem+json body, nothing stored or queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest

from tests.harness import AMQP_URL, System, assert_problem

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024
VALID = {"type": "demo.echo", "payload": {"n": 1}}


@pytest.fixture(scope="module")
def tenant(system: System) -> dict[str, Any]:
    """A client that only ever sends bad requests, so its journal must stay empty."""
    return system.admin_client("sends-only-bad-requests")


@pytest.fixture(scope="module")
def http(system: System, tenant: dict[str, Any]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {system.token(tenant)}"}
    with httpx.Client(base_url=system.base_url, headers=headers, timeout=30) as client:
        yield client


def stored(system: System, client_id: str) -> tuple[int, int]:
    """(events rows, clients.last_seq) of a client."""
    [row] = system.sql(
        "SELECT (SELECT count(*) FROM events WHERE client_id = $1::uuid) AS events, last_seq "
        "FROM clients WHERE id = $1::uuid",
        client_id,
    )
    return row["events"], row["last_seq"]


def queued(system: System, client_id: str) -> int:
    """Messages waiting in the client's mailbox queue; 0 when the queue does not exist."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        queue = f"{system.namespace}.mailbox.{client_id}"
        try:
            declared = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as closed:
            if closed.reply_code != 404:  # only "no such queue" means nothing was queued
                raise
            return 0
        count = declared.method.message_count
        channel.close()
        return int(count)
    finally:
        connection.close()


def assert_refused(
    system: System, tenant: dict[str, Any], response: httpx.Response, status: int
) -> dict[str, Any]:
    """The response is `status` with a problem+json body, and nothing was stored or queued."""
    problem = assert_problem(response, status)
    assert stored(system, tenant["client_id"]) == (0, 0)
    assert queued(system, tenant["client_id"]) == 0
    return problem


def post(http: httpx.Client, content: Any, **headers: str) -> httpx.Response:
    return http.post(
        "/v1/events", content=content, headers={"Content-Type": "application/json", **headers}
    )


def event_with(payload_json: bytes) -> bytes:
    return b'{"type": "demo.echo", "payload": {"value": ' + payload_json + b"}}"


# --- 415 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16"],
)
def test_a_body_that_is_not_declared_as_json_is_a_415(
    system: System, tenant: dict[str, Any], http: httpx.Client, content_type: str
) -> None:
    response = post(http, json.dumps(VALID), **{"Content-Type": content_type})

    assert_refused(system, tenant, response, 415)


def test_a_body_without_a_content_type_is_a_415(
    system: System, tenant: dict[str, Any], http: httpx.Client
) -> None:
    response = http.post("/v1/events", content=json.dumps(VALID).encode())

    assert "content-type" not in response.request.headers
    assert_refused(system, tenant, response, 415)


# --- 400: bodies that are not storable JSON ---------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"type": "demo.echo", "payload": {', id="malformed"),
        pytest.param(json.dumps(VALID).encode() + b" trailing", id="trailing-garbage"),
        pytest.param(event_with(b'"\xff\xfe\xfd"'), id="invalid-utf-8"),
        pytest.param(json.dumps(VALID).encode("utf-16"), id="utf-16"),
        pytest.param(event_with(b"NaN"), id="NaN"),
        pytest.param(event_with(b'"a\\u0000b"'), id="NUL-in-a-string"),
        pytest.param(event_with(b'"\\ud800"'), id="lone-surrogate"),
        pytest.param(event_with(b"9" * 5000), id="5000-digit-integer"),
        pytest.param(event_with(b"[" * 100_000 + b"]" * 100_000), id="100000-deep"),
    ],
)
def test_a_body_that_is_not_storable_json_is_a_400(
    system: System, tenant: dict[str, Any], http: httpx.Client, body: bytes
) -> None:
    assert_refused(system, tenant, post(http, body), 400)


# --- 413 ---------------------------------------------------------------------------------


def oversized() -> bytes:
    return event_with(json.dumps("x" * LIMIT).encode())


def test_a_body_over_the_limit_by_content_length_is_a_413(
    system: System, tenant: dict[str, Any], http: httpx.Client
) -> None:
    body = oversized()

    response = post(http, body)

    assert response.request.headers["content-length"] == str(len(body))
    assert_refused(system, tenant, response, 413)


def test_a_chunked_body_over_the_limit_is_a_413(
    system: System, tenant: dict[str, Any], http: httpx.Client
) -> None:
    # Given a body streamed in chunks, with no Content-Length to refuse it by
    body = oversized()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    response = post(http, chunks())

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_refused(system, tenant, response, 413)


# --- 422: JSON that is not an acceptable event -----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"type": "no.such.handler", "payload": {}}, id="unknown-type"),
        pytest.param({"payload": {}}, id="missing-type"),
        pytest.param({"type": "demo.echo", "payload": [1, 2]}, id="payload-an-array"),
        pytest.param({"type": "demo.echo", "payload": "text"}, id="payload-a-string"),
        pytest.param({"type": "demo.echo"}, id="missing-payload"),
        pytest.param(
            {**VALID, "client_id": "00000000-0000-0000-0000-000000000000"}, id="client_id"
        ),
        pytest.param({**VALID, "seq": 1}, id="seq"),
        pytest.param([VALID], id="an-array"),
    ],
)
def test_json_that_is_not_an_acceptable_event_is_a_422(
    system: System, tenant: dict[str, Any], http: httpx.Client, body: Any
) -> None:
    assert_refused(system, tenant, post(http, json.dumps(body)), 422)


# --- 400: headers and query strings ------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"k" * 256, id="256-characters"),
        pytest.param("clé-ключ".encode(), id="non-ASCII"),
    ],
)
def test_a_bad_idempotency_key_is_a_400(
    system: System, tenant: dict[str, Any], http: httpx.Client, key: bytes
) -> None:
    response = http.post(
        "/v1/events",
        content=json.dumps(VALID),
        headers=[(b"Content-Type", b"application/json"), (b"Idempotency-Key", key)],
    )

    assert_refused(system, tenant, response, 400)


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "limit=0",
        "limit=1001",
        "after_seq=-1",
        "after_seq=abc",
        "limit=",
        "colour=red",
        "limit=5&limit=6",
    ],
)
def test_a_bad_query_on_the_event_list_is_a_400(
    system: System, tenant: dict[str, Any], http: httpx.Client, query: str
) -> None:
    assert_refused(system, tenant, http.get(f"/v1/events?{query}"), 400)


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v2/events", "/v1/events/x/y/z"])
def test_an_unknown_route_is_a_404_problem(
    system: System, tenant: dict[str, Any], http: httpx.Client, path: str
) -> None:
    assert_refused(system, tenant, http.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/events"), ("PUT", "/v1/events"), ("GET", "/v1/token"), ("PATCH", "/healthz")],
)
def test_a_wrong_method_is_a_405_problem(
    system: System, tenant: dict[str, Any], http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, content=json.dumps(VALID))

    assert_refused(system, tenant, response, 405)


# --- the control --------------------------------------------------------------------------------


def test_a_valid_event_by_another_client_is_stored(system: System, tenant: dict[str, Any]) -> None:
    # The positive control: the same checks see an event that is accepted
    other = system.admin_client("sends-a-good-request")
    body = event_with(json.dumps("x" * (LIMIT - 100)).encode())

    with httpx.Client(base_url=system.base_url, timeout=30) as http:
        response = http.post(
            "/v1/events",
            content=body,
            headers={
                "Authorization": f"Bearer {system.token(other)}",
                "Content-Type": "application/json",
            },
        )

    assert response.status_code == 202, response.text
    assert stored(system, other["client_id"]) == (1, 1)
    assert stored(system, tenant["client_id"]) == (0, 0)
