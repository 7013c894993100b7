"""The hostile-input suite: each row gets a clear 4xx problem+json, changes nothing, and the
gateway keeps serving. The last test reads the logs for tokens, secrets and payloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import System, assert_problem
from tests.security import wire
from tests.security.conftest import (
    MARKER,
    Tenant,
    assert_refused,
    assert_serving,
    assert_untouched,
    full_logs,
)

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024
VALID = {"type": "demo.echo", "payload": {"marker": MARKER}}


def event_with(value: bytes) -> bytes:
    return (
        b'{"type": "demo.echo", "payload": {"marker": "'
        + MARKER.encode()
        + b'", "v": '
        + (value + b"}}")
    )


def post(tenant: Tenant, content: Any, **headers: str) -> httpx.Response:
    return tenant.http.post(
        "/v1/events", content=content, headers={"Content-Type": "application/json", **headers}
    )


# --- bodies -------------------------------------------------------------------------------------


def oversized() -> bytes:
    return event_with(json.dumps("x" * LIMIT).encode())


def test_a_body_too_large_by_content_length_is_a_413(mallory: Tenant) -> None:
    before = mallory.journal()

    response = post(mallory, oversized())

    assert_refused(mallory, before, response, 413)


def test_a_chunked_body_too_large_is_a_413(mallory: Tenant) -> None:
    before = mallory.journal()
    body = oversized()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = post(mallory, chunks())

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_refused(mallory, before, response, 413)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(event_with(b"{"), id="malformed"),
        pytest.param(event_with(b"1") + b" trailing garbage", id="trailing-garbage"),
        pytest.param(event_with(b'"\xff\xfe"'), id="invalid-utf-8"),
        pytest.param(event_with(b'"x"').decode().encode("utf-16"), id="utf-16"),
        pytest.param(event_with(b'"a\\u0000b"'), id="jsonb-NUL"),
        pytest.param(event_with(b'"\\udc00"'), id="lone-surrogate"),
        pytest.param(event_with(b"NaN"), id="NaN"),
        pytest.param(event_with(b"Infinity"), id="Infinity"),
        pytest.param(event_with(b"7" * 5000), id="5000-digit-integer"),
        pytest.param(event_with(b"[" * 100_000 + b"]" * 100_000), id="100000-deep"),
    ],
)
def test_a_body_that_is_not_storable_json_is_a_400(mallory: Tenant, body: bytes) -> None:
    before = mallory.journal()

    assert_refused(mallory, before, post(mallory, body), 400)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"type": 7, "payload": {}}, id="type-a-number"),
        pytest.param({"type": ["demo.echo"], "payload": {}}, id="type-an-array"),
        pytest.param({"type": "demo.echo", "payload": "x"}, id="payload-a-string"),
        pytest.param({"type": "demo.echo", "payload": None}, id="payload-null"),
        pytest.param("demo.echo", id="a-string"),
        pytest.param(None, id="null"),
        pytest.param({"type": "no.such.type", "payload": {}}, id="unknown-type"),
    ],
)
def test_json_of_the_wrong_types_is_a_422(mallory: Tenant, body: Any) -> None:
    before = mallory.journal()

    assert_refused(mallory, before, post(mallory, json.dumps(body)), 422)


def test_a_client_id_smuggled_in_the_body_is_refused(mallory: Tenant, bob: Tenant) -> None:
    # Identity comes only from the token: a client_id field is not part of an event
    before, bobs = mallory.journal(), bob.journal()

    response = post(mallory, json.dumps({**VALID, "client_id": bob.id}))

    assert_refused(mallory, before, response, 422)
    assert_untouched(bob, bobs)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
    ],
)
def test_a_wrong_content_type_is_a_415(mallory: Tenant, content_type: str | None) -> None:
    before = mallory.journal()
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = mallory.http.post("/v1/events", content=json.dumps(VALID), headers=headers)

    assert_refused(mallory, before, response, 415)


# --- heads --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"),
    [
        pytest.param("X-Padding", 64 * 1024, id="64-KiB-header"),
        pytest.param("Authorization", 1024 * 1024, id="1-MB-Authorization"),
    ],
)
def test_an_oversized_header_is_refused(
    system: System, mallory: Tenant, name: str, size: int
) -> None:
    before = mallory.journal()
    value = ("Bearer " if name == "Authorization" else "") + "a" * size
    headers = {
        "Authorization": f"Bearer {mallory.token}",
        name: value,
        "Content-Type": "application/json",
    }
    body = json.dumps(VALID).encode()
    headers["Content-Length"] = str(len(body))

    answer = wire.exchange(system.port, wire.request("POST", "/v1/events", headers, body))

    assert wire.status_of(answer) == 431, answer[:300]
    problem = wire.problem_of(answer)
    assert problem["status"] == 431
    assert_untouched(mallory, before)
    assert_serving(system)


def test_an_oversized_header_behind_a_small_request_on_the_same_read_is_refused(
    system: System, mallory: Tenant
) -> None:
    # Given a harmless request with a 64 KiB-header POST pipelined right behind it, one send
    before = mallory.journal()
    body = json.dumps(VALID).encode()
    headers = {
        "Authorization": f"Bearer {mallory.token}",
        "X-Padding": "a" * 64 * 1024,
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    data = wire.request("GET", "/healthz", {}) + wire.request("POST", "/v1/events", headers, body)

    answer = wire.exchange(system.port, data)

    # Then the first is answered, then the second head is refused as too large, in that order
    assert wire.status_of(answer) == 200, answer[:300]
    assert b"HTTP/1.1 431 " in answer.split(b"\r\n\r\n", 1)[1], answer[:600]
    assert b"HTTP/1.1 202" not in answer
    assert_untouched(mallory, before)
    assert_serving(system)


def test_an_endless_header_behind_empty_lines_is_refused(system: System, mallory: Tenant) -> None:
    # Given empty lines (which the parser skips) and then a head whose header never ends
    before = mallory.journal()
    data = b"\r\n\r\nPOST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 2**20

    answer = wire.exchange(system.port, data)

    # Then it is refused as too large, not held in memory until a deadline
    assert wire.status_of(answer) == 431, answer[:300]
    assert_untouched(mallory, before)
    assert_serving(system)


# --- isolation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bobs_event(bob: Tenant) -> dict[str, Any]:
    response = bob.http.post("/v1/events", json={"type": "demo.fail", "payload": {"times": 99}})
    assert response.status_code == 202, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/events/{event}", 404),
        ("POST", "/v1/events/{event}/redrive", 404),
        ("GET", "/v1/admin/mailboxes/{client}", 403),
        ("PATCH", "/v1/admin/mailboxes/{client}", 403),
        ("POST", "/v1/admin/mailboxes/{client}/resume", 403),
        ("GET", "/v1/admin/clients/{client}", 403),
        ("PATCH", "/v1/admin/clients/{client}", 403),
        ("GET", "/v1/admin/clients/{client}/webhook-secrets", 403),
        ("POST", "/v1/admin/clients/{client}/webhook-secrets", 403),
        ("POST", "/v1/hooks/{client}", 400),  # a bearer token is no webhook signature
    ],
)
def test_a_token_of_one_client_cannot_reach_another_clients_ids(
    mallory: Tenant, bob: Tenant, bobs_event: dict[str, Any], method: str, path: str, status: int
) -> None:
    before, bobs = mallory.journal(), bob.journal()
    url = path.format(event=bobs_event["id"], client=bob.id)

    response = mallory.http.request(method, url, json={"policy": "halt"})

    assert_refused(mallory, before, response, status)
    assert bob.journal() == bobs
    [row] = bob.system.sql(
        "SELECT policy, rate_per_second, (SELECT count(*) FROM webhook_secrets "
        "WHERE client_id = $1::uuid) AS secrets FROM clients WHERE id = $1::uuid",
        bob.id,
    )
    assert tuple(row) == ("skip", None, 0)


def test_an_unknown_id_and_another_clients_id_get_the_same_answer(
    mallory: Tenant, bobs_event: dict[str, Any]
) -> None:
    foreign = mallory.http.get(f"/v1/events/{bobs_event['id']}")
    unknown = mallory.http.get(f"/v1/events/{uuid.uuid4()}")

    assert {k: v for k, v in assert_problem(foreign, 404).items() if k != "instance"} == {
        k: v for k, v in assert_problem(unknown, 404).items() if k != "instance"
    }


def test_one_idempotency_key_from_two_clients_makes_two_independent_events(
    system: System,
) -> None:
    alice, carol = Tenant(system, "alice"), Tenant(system, "carol")
    key = {"Idempotency-Key": "shared-key-1"}

    first = post(alice, json.dumps(VALID), **key)
    second = post(carol, json.dumps({"type": "demo.echo", "payload": {"other": 1}}), **key)

    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.json()["id"] != second.json()["id"]
    assert first.json()["client_id"] == alice.id
    assert second.json()["client_id"] == carol.id
    assert alice.journal()[0] == carol.journal()[0] == 1
    alice.http.close()
    carol.http.close()


# --- many connections ---------------------------------------------------------------------------

CONNECTIONS = 2000


async def _hold_and_ask(port: int, payload: bytes, opened: asyncio.Barrier) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await opened.wait()  # every connection is open before any asks
        writer.write(payload)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 120)
        return int(line.split(b" ")[1]) if line.startswith(b"HTTP/1.1") else 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_2000_concurrent_connections_get_answers_and_the_gateway_keeps_serving(
    system: System, mallory: Tenant
) -> None:
    before = mallory.journal()
    body = event_with(b"{")  # malformed: each must be a 400, none stored
    payload = wire.request(
        "POST",
        "/v1/events",
        {
            "Authorization": f"Bearer {mallory.token}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
        },
        body,
    )

    async def storm() -> list[int | BaseException]:
        opened = asyncio.Barrier(CONNECTIONS)
        tasks = [_hold_and_ask(system.port, payload, opened) for _ in range(CONNECTIONS)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    statuses = asyncio.run(storm())

    errors = [s for s in statuses if isinstance(s, BaseException)]
    assert not errors, errors[:3]
    assert set(statuses) <= {400, 503}, sorted(set(map(str, statuses)))
    assert statuses.count(400) > 0
    assert_untouched(mallory, before)
    assert_serving(system)


# --- last: the logs -------------------------------------------------------------------------------


def test_the_logs_hold_no_token_secret_or_payload(
    system: System, mallory: Tenant, bob: Tenant
) -> None:
    logs = full_logs(system)
    for name, secret in [
        ("mallory's token", mallory.token),
        ("bob's token", bob.token),
        ("mallory's client secret", mallory.credentials["client_secret"]),
        ("bob's client secret", bob.credentials["client_secret"]),
        ("a payload", MARKER),
    ]:
        assert secret not in logs, f"{name} appears in the logs"
    assert "gateway ready" in logs  # the positive control: these are the right logs
