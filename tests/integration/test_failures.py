"""Handlers that fail, hang or return garbage cost their own client only.

What ran, how often and in which order is judged by the witness ledger the handlers write
from inside the workers (tests/witness.py, tests/integration/sample_handlers.py), not by the
journal's timestamps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness, witness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def failing_system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("failing")
    env = {
        **witness.environment(tmp / "ledger.jsonl", "tests.integration.sample_handlers"),
        "SERIATIM_HANDLER_TIMEOUT": "0.5",
        "SERIATIM_MAX_ATTEMPTS": "3",
    }
    with harness.running_system(tmp, env=env) as running:
        yield running


def post(system: System, token: str, type_: str, payload: dict[str, object]) -> dict[str, object]:
    return system.post_event(token, type_, payload)


def event(system: System, token: str, event_id: object) -> dict[str, object]:
    response = httpx.get(
        f"{system.base_url}/v1/events/{event_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def runs(system: System) -> Counter[str]:
    """How many times the witness saw each event run."""
    return Counter(run.event for run in witness.read(system.ledger))


def answered(*events: dict[str, object]) -> list[tuple[int, str]]:
    """The (seq, event id) pairs of events the gateway answered, as witness.judge takes them."""
    return [(int(str(e["seq"])), str(e["id"])) for e in events]


def judge(
    system: System, client_id: str, pairs: list[tuple[int, str]], tmp: Path
) -> witness.Judgement:
    """The witness's judgement of one client's runs (the system is shared by the module)."""
    ours = witness.only(system.ledger, [client_id], tmp / "ledger.jsonl")
    return witness.judge(ours, {client_id: pairs}, may_fail=True)


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
        ("witnessed.sleep", {"ms": 5000}, "HandlerTimeout"),
    ],
)
def test_a_failing_handler_ends_dead_and_the_mailbox_moves_on(
    failing_system: System,
    tmp_path: Path,
    type_: str,
    payload: dict[str, object],
    error_type: str,
) -> None:
    """Planted: Execution._coroutine giving up on a handler at its timeout without cancelling
    it (`asyncio.wait` on a task instead of `asyncio.timeout`) → the `witnessed.sleep` case
    fails with `AssertionError: executions=4 overlaps=3 order_breaks=1 lost=1`: the three
    attempts and the next event ran at once. The journal-timestamp version passed with it.
    Planted: Execution.run calling a failed coroutine handler a second time → every case
    fails with `assert 6 == 3` (runs in the ledger against attempts in the journal)."""
    # Given a client whose first event always fails and whose second is fine
    client = failing_system.admin_client()
    token = failing_system.token(client)
    bad = post(failing_system, token, type_, payload)
    good = post(failing_system, token, "witnessed.echo", {"after": "bad"})

    # Then the bad one is dead after max attempts, with the error recorded, and its handler
    # ran once per attempt
    dead = finished(failing_system, token, bad["id"])
    assert dead["status"] == "dead"
    assert dead["attempts"] == 3
    assert dead["error"]["type"] == error_type  # type: ignore[index]
    assert runs(failing_system)[str(bad["id"])] == 3
    # each attempt in its log, oldest first, finished with its own error, one after another
    log: list[dict[str, Any]] = dead["attempt_log"]  # type: ignore[assignment]
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["error"]["type"] for a in log] == [error_type] * 3
    assert all(a["duration_ms"] >= 0 and a["finished_at"] >= a["started_at"] for a in log)
    assert log[0]["finished_at"] <= log[1]["started_at"] <= log[2]["started_at"]
    assert "worker" not in log[0]  # a tenant does not learn the cluster's host names

    # And the next event still runs, after its last attempt ended, never alongside one
    after = finished(failing_system, token, good["id"])
    assert after["status"] == "succeeded"
    judgement = judge(failing_system, client["client_id"], answered(bad, good), tmp_path)
    assert judgement.ok, judgement
    assert judgement.executions == 3 + 1


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
    own error lost.

    Planted: Execution.run calling a failed coroutine handler a second time → fails with
    `assert 6 == 3` (runs in the ledger against attempts in the journal)."""
    # Given a client whose first event always fails with such a message
    token = failing_system.token(failing_system.admin_client())
    bad = post(failing_system, token, type_, {})
    good = post(failing_system, token, "demo.echo", {"after": "bad"})

    # Then the bad one is dead after max attempts, its message stored with U+FFFD in place
    dead = finished(failing_system, token, bad["id"])
    assert dead["status"] == "dead"
    assert dead["attempts"] == 3
    assert dead["error"] == error
    assert runs(failing_system)[str(bad["id"])] == 3  # the witness counts three runs too

    # And the mailbox moves on
    assert finished(failing_system, token, good["id"])["status"] == "succeeded"


@pytest.fixture(scope="module")
def patient_system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {"SERIATIM_HANDLER_TIMEOUT": "8", "SERIATIM_MAX_ATTEMPTS": "1"}
    with harness.running_system(tmp_path_factory.mktemp("patient"), env=env) as running:
        yield running


def test_a_hanging_handler_never_blocks_other_clients(patient_system: System) -> None:
    """Planted: one lock shared by every Mailbox (`self._lock = _SHARED_LOCK`, a module-level
    asyncio.Lock) → fails with `assert run.end < hang.end`: another client's echo on the
    stuck client's worker ran only after the hanging handler was cancelled."""
    # Given one client stuck on a handler that hangs until its 8 s time limit
    stuck = patient_system.token(patient_system.admin_client("stuck"))
    hanging = post(patient_system, stuck, "witnessed.sleep", {"ms": 60000})
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
            finished(patient_system, token, post(patient_system, token, "witnessed.echo", {})["id"])
        )

    # Then theirs ran and ended while it still hung (the witness), and it ends dead with a
    # timeout
    hung = finished(patient_system, stuck, hanging["id"])
    assert hung["error"]["type"] == "HandlerTimeout"  # type: ignore[index]
    assert all(other["status"] == "succeeded" for other in others)
    by_event = {run.event: run for run in witness.read(patient_system.ledger)}
    hang = by_event[str(hanging["id"])]
    assert hang.raised == "CancelledError"
    for other in others:
        run = by_event[str(other["id"])]
        assert hang.start < run.start
        assert run.end is not None
        assert hang.end is not None
        assert run.end < hang.end


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
