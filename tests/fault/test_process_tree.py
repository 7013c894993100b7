"""The process tree: `seriatim up` restarts a worker that died; a worker that starts takes
up every mailbox with a backlog without waiting for a new event."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


def worker_pids(system: System) -> set[int]:
    rows = system.sql("SELECT pid FROM workers WHERE last_seen > now() - interval '3 seconds'")
    return {row["pid"] for row in rows}


def two_workers(system: System, without: int | None = None) -> set[int] | None:
    pids = worker_pids(system)
    return pids if len(pids) == 2 and without not in pids else None


def test_seriatim_up_restarts_a_worker_killed_with_sigkill(services: None, tmp_path: Path) -> None:
    # Given `seriatim up --workers 2` on a fresh database and namespace
    database = harness.create_database()
    system = System(tmp_path, database, harness.new_namespace(), workers=2)
    try:
        up = system.spawn("up", "up", "--workers", "2")
        wait_for(system.ready, 60, "the gateway started by seriatim up")
        before = wait_for(lambda: two_workers(system), 60, "two workers to register")

        # When one of its workers is killed
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        # Then seriatim up starts another one, and the system serves a new client
        after = wait_for(
            lambda: two_workers(system, without=victim), 60, "a replacement worker to register"
        )
        assert len(after - before) == 1
        client = system.admin_client()
        token = system.token(client)
        response = httpx.post(
            f"{system.base_url}/v1/events",
            json={"type": "demo.echo", "payload": {}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 202
        event_id = response.json()["id"]
        wait_for(
            lambda: (
                system.sql("SELECT status FROM events WHERE id = $1::uuid", event_id)[0][0]
                == "succeeded"
            ),
            60,
            "the event to succeed",
        )
        assert "restarting in" in (tmp_path / "up.log").read_text()

        # And Ctrl-C stops the whole tree cleanly
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        assert not worker_pids(system)
    finally:
        system.stop()
        harness.delete_namespace(system.namespace, database)
        harness.drop_database(database)


def test_a_starting_worker_takes_up_every_mailbox_with_a_backlog(
    services: None, tmp_path: Path
) -> None:
    # Given events accepted while no worker runs
    with harness.running_system(tmp_path, workers=0) as system:
        tokens = [system.token(system.admin_client(f"waiting-{n}")) for n in range(3)]
        with httpx.Client(base_url=system.base_url, timeout=10) as http:
            for token in tokens:
                for n in range(3):
                    response = http.post(
                        "/v1/events",
                        json={"type": "demo.echo", "payload": {"n": n}},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert response.status_code == 202
        assert system.sql("SELECT count(*) FROM events WHERE status = 'queued'")[0][0] == 9

        # When a worker starts, and nothing else is posted
        system.spawn("worker-1", "worker")

        # Then every waiting mailbox is activated and drained, in order
        wait_for(
            lambda: system.sql("SELECT count(*) FROM events WHERE status = 'succeeded'")[0][0] == 9,
            60,
            "the backlog to be processed",
        )
        done = system.sql("SELECT done_seq FROM clients WHERE name LIKE 'waiting-%'")
        assert [row["done_seq"] for row in done] == [3, 3, 3]
