"""Slow and lying clients: deadlines for the head and the body, and Content-Length lies."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import System, running_system
from tests.security import wire
from tests.security.conftest import MARKER, Tenant, assert_serving, assert_untouched

pytestmark = pytest.mark.integration

BODY = json.dumps({"type": "demo.echo", "payload": {"marker": MARKER}}).encode()


@pytest.fixture(scope="module")
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway with one-second head and body deadlines."""
    env = {"SERIATIM_HEADER_TIMEOUT": "1", "SERIATIM_BODY_TIMEOUT": "1"}
    with running_system(Path(tmp_path_factory.mktemp("slow")), workers=1, env=env) as running:
        yield running


def connect(system: System) -> socket.socket:
    """A connection whose reads time out (and fail, see wire.read_until_closed) after 10 s,
    ten times the gateway's deadlines here."""
    return socket.create_connection(("127.0.0.1", system.port), timeout=10)


def head(tenant: Tenant, length: int) -> bytes:
    headers = {
        "Authorization": f"Bearer {tenant.token}",
        "Content-Type": "application/json",
        "Content-Length": str(length),
    }
    return wire.request("POST", "/v1/events", headers)


def test_a_slowloris_head_is_answered_408_and_closed(system: System, mallory: Tenant) -> None:
    """Planted: no write_eof/close after a refusal in gateway/wire.py `_write_refusal`
    → fails with `AssertionError: the server kept the connection open after
    b'HTTP/1.1 408 Request Timeout...'` (before, the read's timeout counted as the close)."""
    before = mallory.journal()
    with connect(system) as sock:
        # Given a client that sends half a head and then nothing
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        # While it waits, other clients are served
        assert_serving(system)
        answer = wire.read_until_closed(sock)

    assert wire.status_of(answer) == 408, answer
    assert wire.problem_of(answer)["status"] == 408
    assert_untouched(mallory, before)


def test_a_connection_that_never_asks_is_closed(system: System) -> None:
    """Planted: `_head_too_slow` leaves a connection that never asked open (no
    transport.close()) → fails with `AssertionError: the server kept the connection open
    after b''` (before, the read's timeout returned b"" and the test passed)."""
    with connect(system) as sock:
        assert wire.read_until_closed(sock) == b""


def test_a_head_trickled_a_byte_at_a_time_is_cut_off(system: System, mallory: Tenant) -> None:
    before = mallory.journal()
    data = head(mallory, len(BODY)) + BODY
    with connect(system) as sock:
        started = time.monotonic()
        try:
            for byte in data:  # one byte every 50 ms: the head would take minutes
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except ConnectionError:
            pass  # the gateway closed the connection, as it should (a timeout is not that)
        answer = wire.read_until_closed(sock)
        elapsed = time.monotonic() - started

    assert wire.status_of(answer) == 408, answer
    assert elapsed < len(data) * 0.05  # cut off before the head was complete
    assert_untouched(mallory, before)


def test_empty_lines_trickled_after_a_request_do_not_hold_the_connection(
    system: System, mallory: Tenant
) -> None:
    # Given a kept-alive connection whose request was answered
    with connect(system) as sock:
        sock.sendall(wire.request("GET", "/healthz", {}))
        assert wire.status_of(sock.recv(65536)) == 200

        # When it sends only empty lines (skipped by the parser), one every 100 ms for 10 s
        cut_off = False
        for _ in range(100):
            try:
                sock.sendall(b"\r\n")
            except ConnectionError:  # reset or broken pipe; a timeout is not a close
                cut_off = True
                break
            time.sleep(0.1)
        answer = wire.read_until_closed(sock)

    # Then the head deadline (1 s here) closed it before the empty lines ran out
    assert cut_off
    assert wire.status_of(answer) in (0, 408), answer
    assert_serving(system)


@pytest.mark.parametrize("sent", [0, 10], ids=["no-body", "part-of-the-body"])
def test_a_body_shorter_than_its_content_length_is_a_408(
    system: System, mallory: Tenant, sent: int
) -> None:
    # A slow body and a lying Content-Length look alike: the body does not come in time
    before = mallory.journal()
    with connect(system) as sock:
        sock.sendall(head(mallory, len(BODY)) + BODY[:sent])
        answer = wire.read_until_closed(sock)

    assert wire.status_of(answer) == 408, answer
    assert wire.problem_of(answer)["status"] == 408
    assert_untouched(mallory, before)
    assert_serving(system)


def test_a_body_longer_than_its_content_length_is_refused(system: System, mallory: Tenant) -> None:
    # Given a Content-Length that covers only the start of the JSON
    before = mallory.journal()

    answer = wire.exchange(system.port, head(mallory, 20) + BODY)

    # The truncated body is not JSON, and what follows is not a request
    assert wire.status_of(answer) == 400, answer
    assert wire.problem_of(answer)["status"] == 400
    assert b"HTTP/1.1 2" not in answer
    assert_untouched(mallory, before)


def test_a_body_trickled_to_a_route_that_never_reads_it_is_cut_off(
    system: System, mallory: Tenant
) -> None:
    # Given an unauthenticated request, answered 401 without reading its body
    data = wire.request(
        "POST", "/v1/events", {"Content-Type": "application/json", "Content-Length": "100000"}
    )
    with connect(system) as sock:
        sock.sendall(data)
        first = sock.recv(65536)
        assert wire.status_of(first) == 401
        cut_off = False
        try:
            for _ in range(100):  # a byte every 100 ms for 10 s: ten body deadlines
                sock.sendall(b" ")
                time.sleep(0.1)
        except ConnectionError:  # reset or broken pipe; a timeout is not a close
            cut_off = True
    assert cut_off, "the gateway kept reading a body nobody will use for 10 s"
    assert_serving(system)


def test_an_honest_client_is_served_meanwhile(system: System, mallory: Tenant) -> None:
    honest = Tenant(system, "honest")
    try:
        response = honest.http.post(
            "/v1/events", content=BODY, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.text
    finally:
        honest.http.close()
