"""Handlers that fail, hang or return garbage cost their own client only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def failing_system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {
        "SERIATIM_HANDLERS": "tests.integration.sample_handlers",
        "SERIATIM_HANDLER_TIMEOUT": "0.5",
        "SERIATIM_MAX_ATTEMPTS": "3",
        "PYTHONPATH": str(ROOT),
    }
    with harness.running_system(tmp_path_factory.mktemp("failing"), env=env) as running:
        yield running


def post(system: System, token: str, type_: str, payload: dict[str, object]) -> dict[str, object]:
    response = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": type_, "payload": payload},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def event(system: System, token: str, event_id: object) -> dict[str, object]:
    response = httpx.get(
        f"{system.base_url}/v1/events/{event_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def finished(system: System, token: str, event_id: object) -> dict[str, object]:
    return wait_for(
        lambda: (e := event(system, token, event_id))["status"] in ("succeeded", "dead") and e,
        60,
        f"event {event_id} to finish",
    )


@pytest.mark.parametrize(
    ("type_", "payload", "error_type"),
    [
        ("test.crash", {}, "ZeroDivisionError"),
        ("test.unserialisable", {}, "UnserialisableResult"),
        ("test.nan", {}, "UnserialisableResult"),
        ("demo.sleep", {"ms": 5000}, "HandlerTimeout"),
    ],
)
def test_a_failing_handler_ends_dead_and_the_mailbox_moves_on(
    failing_system: System, type_: str, payload: dict[str, object], error_type: str
) -> None:
    # Given a client whose first event always fails and whose second is fine
    token = failing_system.token(failing_system.admin_client())
    bad = post(failing_system, token, type_, payload)
    good = post(failing_system, token, "demo.echo", {"after": "bad"})

    # Then the bad one is dead after max attempts, with the error recorded
    dead = finished(failing_system, token, bad["id"])
    assert dead["status"] == "dead"
    assert dead["attempts"] == 3
    assert dead["error"]["type"] == error_type  # type: ignore[index]

    # And the next event still runs, after it
    after = finished(failing_system, token, good["id"])
    assert after["status"] == "succeeded"
    assert after["started_at"] >= dead["finished_at"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("type_", "error"),
    [
        (
            "test.nul_error",
            {"type": "RuntimeError", "message": "device said b'\ufffd\x01' and stopped"},
        ),
        ("test.surrogate_error", {"type": "ValueError", "message": "caf\ufffd not found"}),
    ],
)
def test_an_error_message_jsonb_cannot_hold_is_stored_readable(
    failing_system: System, type_: str, error: dict[str, str]
) -> None:
    """On main (35eeb40) this failed: every attempt's write raised ValueError (jsonb cannot
    hold the text), logged as an ERROR with a traceback and the message requeued, until a
    fourth delivery found the attempts used up: dead as `AttemptsExhausted`, the handler's
    own error lost."""
    # Given a client whose first event always fails with such a message
    token = failing_system.token(failing_system.admin_client())
    bad = post(failing_system, token, type_, {})
    good = post(failing_system, token, "demo.echo", {"after": "bad"})

    # Then the bad one is dead after max attempts, its message stored with U+FFFD in place
    dead = finished(failing_system, token, bad["id"])
    assert dead["status"] == "dead"
    assert dead["attempts"] == 3
    assert dead["error"] == error

    # And the mailbox moves on
    assert finished(failing_system, token, good["id"])["status"] == "succeeded"


@pytest.fixture(scope="module")
def patient_system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {"SERIATIM_HANDLER_TIMEOUT": "8", "SERIATIM_MAX_ATTEMPTS": "1"}
    with harness.running_system(tmp_path_factory.mktemp("patient"), env=env) as running:
        yield running


def test_a_hanging_handler_never_blocks_other_clients(patient_system: System) -> None:
    # Given one client stuck on a handler that hangs until its 8 s time limit
    stuck = patient_system.token(patient_system.admin_client("stuck"))
    hanging = post(patient_system, stuck, "demo.sleep", {"ms": 60000})
    wait_for(
        lambda: event(patient_system, stuck, hanging["id"])["status"] == "processing",
        30,
        "the hanging event to start",
    )

    # When other clients post meanwhile
    others = []
    for n in range(5):
        token = patient_system.token(patient_system.admin_client(f"other-{n}"))
        others.append(
            finished(patient_system, token, post(patient_system, token, "demo.echo", {})["id"])
        )

    # Then theirs finish while it still hangs, and it ends dead with a timeout
    hung = finished(patient_system, stuck, hanging["id"])
    assert hung["error"]["type"] == "HandlerTimeout"  # type: ignore[index]
    for other in others:
        assert other["status"] == "succeeded"
        assert other["finished_at"] < hung["finished_at"]  # type: ignore[operator]


def test_a_blocking_plain_function_handler_runs_in_a_thread(failing_system: System) -> None:
    token = failing_system.token(failing_system.admin_client())
    done = finished(
        failing_system, token, post(failing_system, token, "test.blocking", {"ms": 50})["id"]
    )
    assert done["status"] == "succeeded"
    assert done["result"] == {"slept_ms": 50}


def test_user_handler_types_are_known_to_the_gateway(failing_system: System) -> None:
    token = failing_system.token(failing_system.admin_client())
    response = httpx.post(
        f"{failing_system.base_url}/v1/events",
        json={"type": "test.nope", "payload": {}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 422
    assert post(failing_system, token, "test.crash", {})["status"] == "queued"
