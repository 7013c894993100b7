"""What the real processes log: JSON lines that lead to the trace, and no secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

MARKER = "payload-marker-7f3a9c"


@pytest.fixture(scope="module")
def logged(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {"SERIATIM_MAX_ATTEMPTS": "2", "SERIATIM_LOG_FORMAT": ""}
    with harness.running_system(tmp_path_factory.mktemp("logged"), env=env) as running:
        yield running


def records(system: System) -> list[dict[str, Any]]:
    found = []
    for path in sorted(system.tmp.glob("*.log")):
        for line in path.read_text().splitlines():
            found.append(json.loads(line))  # every line is one JSON object
    return found


def test_a_dead_event_is_logged_as_json_with_its_trace_client_and_event(
    logged: System,
) -> None:
    # Given a client whose secret and event payload must never reach the logs
    client = logged.admin_client("logs")
    token = logged.token(client)

    # When its event fails every attempt
    response = httpx.post(
        f"{logged.base_url}/v1/events",
        json={"type": "demo.fail", "payload": {"times": 9, "card": MARKER}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]

    def dead_line() -> dict[str, Any] | None:
        for record in records(logged):
            if record.get("event_id") == event_id and record["level"] == "WARNING":
                return record
        return None

    line = wait_for(dead_line, 60, "the dead event's log line")

    # Then the line names the event, its client and its trace, in the standard fields
    assert {"timestamp", "level", "logger", "message", "span_id"} <= set(line)
    assert line["client_id"] == client["client_id"]
    assert line["trace_id"] == response.headers["trace-id"]
    assert "is dead" in line["message"]

    # And nothing logged holds the payload, the client secret or the token
    text = "\n".join(path.read_text() for path in logged.tmp.glob("*.log"))
    assert MARKER not in text
    assert client["client_secret"] not in text
    assert token not in text


def test_a_gateway_line_logged_during_a_request_names_the_calling_client(
    logged: System,
) -> None:
    # Given an operator client
    operator = logged.create_client("operator", admin=True)
    token = logged.token(operator)

    # When it creates a client through the admin API (the gateway logs the creation)
    response = httpx.post(
        f"{logged.base_url}/v1/admin/clients",
        json={"name": "audited"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    created = response.json()["client_id"]

    def creation_line() -> dict[str, Any] | None:
        for record in records(logged):
            if record["logger"].startswith("gateway") and created in record["message"]:
                return record
        return None

    # Then that line carries the caller's client id and the request's trace id
    line = wait_for(creation_line, 10, "the gateway's line about the new client")
    assert line["client_id"] == operator["client_id"]
    assert line["trace_id"] == response.headers["trace-id"]
