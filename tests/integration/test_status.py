"""`seriatim status` names the worker whose supervisor is the active one, and a new one once
that worker is killed; with the workers, the backlog and the suspended mailboxes.

On the starting code `status` has no `active_supervisor`: the first wait fails (KeyError).
Planted: the heartbeat's `CASE WHEN $5` always NULL (no worker ever says it supervises) →
the first wait times out ("a worker to be named the active supervisor")."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway and two workers of their own: one of them is killed."""
    with harness.running_system(tmp_path_factory.mktemp("status"), workers=2) as running:
        yield running


def seriatim(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seriatim", *args],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def status(system: System) -> dict[str, Any]:
    done = seriatim(system, "status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_status_names_the_new_active_supervisor_after_its_worker_is_killed(pair: System) -> None:
    tenant = pair.create_client("status-suspended")
    suspended = seriatim(pair, "mailbox", "suspend", tenant["client_id"], "--reason", "checks")
    assert suspended.returncode == 0, suspended.stderr
    token = pair.token(tenant)
    for n in range(3):  # they wait behind the suspension: the backlog
        pair.post_event(token, "demo.echo", {"n": n})

    first = wait_for(
        lambda: (s := status(pair))["active_supervisor"] and s,
        30,
        "a worker to be named the active supervisor",
    )
    assert first["workers"] == 2
    assert first["backlog"] >= 3
    assert tenant["client_id"] in first["suspended"]
    roles = {w["worker"]: w["supervisor"] for w in first["live_workers"]}
    active = first["active_supervisor"]["worker"]
    assert sorted(roles.values()) == ["active", "standby"]
    assert roles[active] == "active"
    readable = seriatim(pair, "status")
    assert readable.returncode == 0, readable.stderr
    assert "active_supervisor" in readable.stdout
    assert active in readable.stdout

    # SIGKILL the process of the worker named active (by its pid)
    [victim] = [
        name
        for name, process in pair.processes.items()
        if process.pid == first["active_supervisor"]["pid"]
    ]
    pair.processes[victim].send_signal(signal.SIGKILL)
    pair.processes[victim].wait(timeout=10)

    after = wait_for(
        lambda: (
            (s := status(pair))["active_supervisor"]
            and s["active_supervisor"]["worker"] != active
            and s
        ),
        60,
        "the surviving worker to be named the active supervisor",
    )
    assert after["workers"] == 1
    [survivor] = after["live_workers"]
    assert survivor["worker"] == after["active_supervisor"]["worker"]
    assert survivor["supervisor"] == "active"
    assert tenant["client_id"] in after["suspended"]
