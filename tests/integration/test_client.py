"""`seriatim.client` against the real gateway: sends, reads, typed errors, and its retries
after a real 429, a real 503 and a dropped connection, which never duplicate an event."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seriatim.client import (
    AsyncClient,
    AuthenticationError,
    Backoff,
    Client,
    InvalidRequestError,
    Retry,
)
from tests.harness import System, running_system, wait_for

pytestmark = pytest.mark.integration


def connect(system: System, credentials: dict[str, Any], **options: Any) -> Client:
    return Client(
        options.pop("base_url", system.base_url),
        credentials["client_id"],
        credentials["client_secret"],
        **options,
    )


def keys_of(system: System, client_id: str) -> list[str]:
    rows = system.sql(
        "SELECT idempotency_key FROM events WHERE client_id = $1::uuid ORDER BY seq", client_id
    )
    return [row["idempotency_key"] for row in rows]


def test_send_then_read_the_event_the_listing_and_the_mailbox(system: System) -> None:
    credentials = system.admin_client("client-basics")
    with connect(system, credentials) as client:
        accepted = client.send("demo.echo", {"n": 1})

        done = wait_for(
            lambda: (e := client.event(accepted["id"]))["status"] == "succeeded" and e,
            30,
            "the event to succeed",
        )
        listed = list(client.events(limit=1))
        mailbox = client.mailbox()

    assert accepted["status"] == "queued"
    assert accepted["replayed"] is False
    assert done["result"] == {"n": 1}
    assert [event["id"] for event in listed] == [accepted["id"]]
    assert mailbox["client_id"] == credentials["client_id"]


async def test_the_async_client_replays_a_send_with_the_same_key(system: System) -> None:
    credentials = system.admin_client("client-async")
    async with AsyncClient(
        system.base_url, credentials["client_id"], credentials["client_secret"]
    ) as client:
        first = await client.send("demo.echo", {"n": 2}, idempotency_key="order-2")
        again = await client.send("demo.echo", {"n": 2}, idempotency_key="order-2")
        other = await client.send("demo.echo", {"n": 2})
        listed = [event["id"] async for event in client.events()]
        mailbox = await client.mailbox()

    assert again["replayed"] is True
    assert again["id"] == first["id"]
    assert other["id"] != first["id"]
    assert listed == [first["id"], other["id"]]
    assert mailbox["last_seq"] == 2


def test_refusals_raise_typed_errors_with_the_problem_fields(system: System) -> None:
    credentials = system.admin_client("client-errors")
    with connect(system, credentials) as client, pytest.raises(InvalidRequestError) as unknown:
        client.send("no.such.type", {})
    with (
        connect(system, {**credentials, "client_secret": "wrong"}) as stranger,
        pytest.raises(AuthenticationError) as refused,
    ):
        stranger.mailbox()

    assert unknown.value.status == 422
    assert unknown.value.type.endswith("unknown-event-type")
    assert unknown.value.detail
    assert refused.value.status == 401
    assert refused.value.extra["error"] == "invalid_client"


def test_a_429_is_retried_after_retry_after_and_both_events_are_accepted(system: System) -> None:
    credentials = system.admin_client("client-429")
    admin = system.token(system.create_client("client-429-admin", admin=True))
    patched = httpx.patch(
        f"{system.base_url}/v1/admin/clients/{credentials['client_id']}",
        json={"rate_limit": {"per_second": 1, "burst": 1}},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    retries: list[Retry] = []

    with connect(system, credentials, on_retry=retries.append) as client:
        sent = [client.send("demo.echo", {"n": n}) for n in range(2)]

    assert [retry.reason for retry in retries][:1] == ["429"]
    assert all(retry.delay >= 1 for retry in retries)  # never sooner than Retry-After: 1
    assert len(keys_of(system, credentials["client_id"])) == 2
    assert sent[0]["id"] != sent[1]["id"]


class DroppingProxy:
    """A TCP proxy in front of the gateway that forwards the first POST /v1/events, reads the
    gateway's whole answer, and drops the connection instead of passing the answer on: the
    event is accepted, and the client never hears of it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(downstream,), daemon=True).start()

    def _pipe(self, downstream: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with downstream, upstream:
            while request := _one_message(downstream):
                upstream.sendall(request)
                answer = _one_message(upstream)
                if request.startswith(b"POST /v1/events ") and self.dropped == 0:
                    self.dropped += 1
                    return
                downstream.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def _one_message(peer: socket.socket) -> bytes:
    """One whole HTTP request or answer (httpx and the gateway send a Content-Length when there
    is a body); b"" when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = peer.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    while len(body) < sum(lengths):
        body += peer.recv(65536)
    return head + b"\r\n\r\n" + body


def test_after_a_dropped_connection_the_retry_reuses_the_key_and_makes_no_second_event(
    system: System,
) -> None:
    """Planted back (a new key per attempt), this test sees two events and `replayed` false."""
    credentials = system.admin_client("client-dropped")
    proxy = DroppingProxy(system.port)
    retries: list[Retry] = []
    try:
        with connect(
            system, credentials, base_url=f"http://127.0.0.1:{proxy.port}", on_retry=retries.append
        ) as client:
            accepted = client.send("demo.echo", {"n": 3})
    finally:
        proxy.close()

    assert proxy.dropped == 1
    assert len(retries) == 1
    assert retries[0].reason in {"RemoteProtocolError", "ReadError"}
    assert accepted["replayed"] is True  # the first attempt's event, told by the retry
    assert len(keys_of(system, credentials["client_id"])) == 1


@pytest.fixture(scope="module")
def narrow(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway that serves one authenticated request at a time."""
    env = {"SERIATIM_MAX_CONCURRENT_REQUESTS": "1"}
    with running_system(Path(tmp_path_factory.mktemp("narrow")), 1, env) as running:
        yield running


def test_a_503_is_retried_until_the_gateway_has_room(narrow: System) -> None:
    # Given the gateway's one tenant slot held by a request whose body has not arrived
    credentials = narrow.admin_client("client-503")
    token = narrow.token(credentials)
    body = b'{"type": "demo.echo", "payload": {"n": 0}}'
    holder = socket.create_connection(("127.0.0.1", narrow.port))
    holder.sendall(
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    wait_for(lambda: _overloaded(narrow.base_url, token), 30, "the slot to be taken")
    retries: list[Retry] = []

    def release(retry: Retry) -> None:  # the first 503 seen: let the held request finish
        retries.append(retry)
        holder.sendall(body)

    # When the client sends meanwhile, it hears 503 and retries after Retry-After
    with connect(narrow, credentials, on_retry=release, backoff=Backoff(attempts=10)) as client:
        accepted = client.send("demo.echo", {"n": 1})
    holder.close()

    assert retries[0].reason == "503"
    assert retries[0].delay >= 1
    assert accepted["seq"] == 2  # after the held request's event
    assert len(keys_of(narrow, credentials["client_id"])) == 2


def _overloaded(base_url: str, token: str) -> bool:
    answer = httpx.get(
        f"{base_url}/v1/mailbox", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return answer.status_code == 503


def test_send_batch_accepts_all_in_order_and_a_retry_replays_them(system: System) -> None:
    credentials = system.admin_client("client-batch")
    items = [{"type": "demo.echo", "payload": {"n": n}} for n in range(3)]
    with connect(system, credentials) as client:
        first = client.send_batch(
            [{**item, "idempotency_key": f"b-{uuid.uuid4()}"} for item in items]
        )
        keyed = [
            {**item, "idempotency_key": key}
            for item, key in zip(items, keys_of(system, credentials["client_id"]), strict=True)
        ]
        again = client.send_batch(keyed)

    assert [item["seq"] for item in first] == [1, 2, 3]
    assert [item["id"] for item in again] == [item["id"] for item in first]
    assert all(item.get("replayed") for item in again)


def test_a_refused_token_is_fetched_again_once(system: System) -> None:
    """The client's token is revoked (disable, enable: tokens held before stay refused); its
    next read gets a 401, fetches a new token and succeeds. Without the refetch on 401 the
    read raises AuthenticationError."""
    credentials = system.admin_client("client-refetch")
    admin = system.token(system.create_client("client-refetch-admin", admin=True))
    url = f"{system.base_url}/v1/admin/clients/{credentials['client_id']}"
    tokens: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.url.path == "/v1/token":
            tokens.append(request.url.path)

    http = httpx.Client(base_url=system.base_url, timeout=10, event_hooks={"request": [record]})
    with connect(system, credentials, http=http) as client:
        client.mailbox()
        for disabled in (True, False):
            patched = httpx.patch(
                url,
                json={"disabled": disabled},
                headers={"Authorization": f"Bearer {admin}"},
                timeout=10,
            )
            assert patched.status_code == 200, patched.text
        mailbox = wait_for(lambda: _refused_then_served(client), 30, "the old token refused")

    assert mailbox["client_id"] == credentials["client_id"]
    assert len(tokens) == 2


def _refused_then_served(client: Client) -> dict[str, Any] | None:
    """The mailbox once the client had to fetch a second token for it."""
    before = client._token
    mailbox = client.mailbox()
    return mailbox if client._token is not before else None
