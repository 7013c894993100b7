"""SERIATIM_MIDDLEWARE and SERIATIM_DEMO_HANDLERS in running workers.

One system, its demo handlers off, runs Dramatiq's `CurrentMessage` and the project's own
`Recording` middleware (tests/integration/middleware_handlers.py), which writes each hook it
receives to a file that the tests read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness, witness
from tests.harness import System, wait_for
from tests.integration.middleware_handlers import HOOKS_ENV

pytestmark = pytest.mark.integration

HANDLERS = "tests.integration.middleware_handlers"


@pytest.fixture(scope="module")
def hooks_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hooks") / "hooks.jsonl"


@pytest.fixture(scope="module")
def hooked(
    services: None, tmp_path_factory: pytest.TempPathFactory, hooks_file: Path
) -> Iterator[System]:
    env = {
        HOOKS_ENV: str(hooks_file),
        "SERIATIM_HANDLERS": HANDLERS,
        "SERIATIM_MIDDLEWARE": f"dramatiq.middleware.CurrentMessage,{HANDLERS}.Recording",
        "SERIATIM_DEMO_HANDLERS": "off",
        "SERIATIM_MAX_ATTEMPTS": "2",
        "SERIATIM_BACKOFF_MIN": "0.01",
        "SERIATIM_BACKOFF_MAX": "0.02",
        "PYTHONPATH": str(witness.ROOT),
    }
    with harness.running_system(tmp_path_factory.mktemp("hooked"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def token(hooked: System) -> str:
    return hooked.token(hooked.admin_client())


def post(system: System, token: str, type_: str) -> httpx.Response:
    return httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": type_, "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def finished(system: System, token: str, type_: str) -> dict[str, Any]:
    """Post an event of `type_` and wait for its outcome."""
    response = post(system, token, type_)
    assert response.status_code == 202, response.text
    url = f"{system.base_url}/v1/events/{response.json()['id']}"
    headers = {"Authorization": f"Bearer {token}"}

    def outcome() -> dict[str, Any] | None:
        event = dict(httpx.get(url, headers=headers, timeout=10).json())
        return event if event["status"] in ("succeeded", "dead") else None

    return wait_for(outcome, 60, f"the {type_} event to finish")  # type: ignore[no-any-return]


def hooks(path: Path, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The hooks `Recording` received for the event, in order."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line for line in lines if line["message_id"] == event["id"]]


def hooks_ended(path: Path, event: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The event's hooks once there are `count` of them (the after hooks follow the outcome)."""
    return wait_for(  # type: ignore[no-any-return]
        lambda: len(seen := hooks(path, event)) >= count and seen, 30, "the hooks"
    )


@pytest.mark.parametrize("type_", ["hooks.current", "hooks.current_plain"])
def test_a_handler_reads_its_message_from_dramatiqs_current_message(
    hooked: System, token: str, hooks_file: Path, type_: str
) -> None:
    event = finished(hooked, token, type_)

    assert event["status"] == "succeeded", event["error"]
    assert event["result"] == {"message_id": event["id"], "seq": event["seq"], "id": event["id"]}
    # The client's first event: the mailbox placed for it may take it from the journal before
    # its queue delivers it, and then acks the delivered copy unrun, with after_skip_message
    # (docs/api.md). One call, hooked once, either way.
    seen = [line["hook"] for line in hooks_ended(hooks_file, event, 2)]
    assert [hook for hook in seen if hook != "after_skip_message"] == [
        "before_process_message",
        "after_process_message",
    ]


def test_every_attempt_is_hooked_and_a_failure_hands_over_the_handlers_exception(
    hooked: System, token: str, hooks_file: Path
) -> None:
    event = finished(hooked, token, "hooks.fail")

    assert (event["status"], event["attempts"]) == ("dead", 2)
    seen = hooks_ended(hooks_file, event, 4)
    assert [line["hook"] for line in seen] == [
        "before_process_message",
        "after_process_message",
    ] * 2
    assert seen[1]["exception"] == ["ValueError", "planned failure of attempt 1"]
    assert seen[3]["exception"] == ["ValueError", "planned failure of attempt 2"]


def test_a_message_the_middleware_skips_is_dead_at_once_and_the_mailbox_goes_on(
    hooked: System, token: str, hooks_file: Path
) -> None:
    skipped = finished(hooked, token, "hooks.skip")
    after = finished(hooked, token, "hooks.current")

    assert (skipped["status"], skipped["attempts"]) == ("dead", 1)
    assert skipped["error"]["type"] == "SkipMessage"
    assert [line["hook"] for line in hooks_ended(hooks_file, skipped, 2)] == [
        "before_process_message",
        "after_skip_message",
    ]
    assert after["status"] == "succeeded"


def test_a_middleware_that_raises_in_its_hook_does_not_stop_the_handler(
    hooked: System, token: str, hooks_file: Path
) -> None:
    event = finished(hooked, token, "hooks.broken_hook")

    assert (event["status"], event["result"], event["attempts"]) == ("succeeded", "ran", 1)
    assert hooks_ended(hooks_file, event, 2)[1]["result"] == "ran"


def test_with_the_demo_handlers_off_a_demo_event_is_an_unknown_type(
    hooked: System, token: str
) -> None:
    response = post(hooked, token, "demo.echo")

    harness.assert_problem(response, 422)
    assert "demo.echo" in response.text
