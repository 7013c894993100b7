"""Redrive-by-filter jobs live in PostgreSQL: started in the console of one gateway, their
progress shows in another's; a job whose gateway is killed mid-way is shown interrupted there,
with how far it got, and running the same filter again redrives the rest, each event once, in
`seq` order.

On the starting code the second gateway answers 404 for the first one's job ("jobs live in
one gateway"): each test fails at its first progress read on the second gateway."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.harness import System, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_gateways(
    services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[System, str]]:
    """A system (gateway, one worker) and a second gateway on the same journal and broker."""
    with harness.running_system(tmp_path_factory.mktemp("redrive-jobs"), workers=1) as system:
        port = free_port()
        system.spawn("gateway-2", "gateway", env={"SERIATIM_HTTP_PORT": str(port)})
        second = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{second}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "the second gateway to be ready")
        yield system, second


def dead_events(system: System, client_id: str, count: int) -> None:
    """`count` dead events at the client's tail, as if each had failed its attempts."""
    system.sql(
        """
        WITH c AS (
            UPDATE clients SET last_seq = last_seq + $2, done_seq = done_seq + $2,
                               stored_events = stored_events + $2
            WHERE id = $1::uuid RETURNING last_seq - $2 AS before
        )
        INSERT INTO events (client_id, seq, type, payload, status, attempts, published_at,
                            started_at, finished_at, error, bytes)
        SELECT $1::uuid, c.before + g, 'demo.echo', jsonb_build_object('n', g), 'dead', 1,
               now(), now(), now(), '{"type": "Boom", "message": "m"}', 8
        FROM c, generate_series(1, $2) AS g
        """,
        client_id,
        count,
    )


@contextlib.contextmanager
def operator(system: System, *bases: str) -> Iterator[list[httpx.Client]]:
    """An operator's console session, on each of these gateways (one cookie for all)."""
    credentials = system.create_client("redrive-operator", admin=True)
    first = httpx.Client(base_url=bases[0], timeout=30)
    token = re.search(r'name="token" value="([^"]+)"', first.get("/console/signin").text)
    assert token, "the sign-in page carries a login token"
    signed = first.post(
        "/console/signin",
        data={
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
            "token": token.group(1),
        },
    )
    assert signed.status_code in (302, 303), signed.text
    others = [httpx.Client(base_url=b, timeout=30, cookies=first.cookies) for b in bases[1:]]
    try:
        yield [first, *others]
    finally:
        for client in (first, *others):
            client.close()


def start_job(console: httpx.Client, client_id: str) -> str:
    form = console.get("/console/redrive")
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    started = console.post("/console/redrive", data={"csrf": csrf[1], "client_id": client_id})
    assert started.status_code in (302, 303), started.text
    return str(started.headers["location"])


def job(console: httpx.Client, path: str) -> dict[str, Any]:
    page = console.get(path, params={"fragment": "1"})
    assert page.status_code == 200, page.text
    redriven = re.search(r'id="redrive-progress">(\d+) of (\d+) redriven', page.text)
    processed = re.search(r'id="redrive-processed">(\d+)<', page.text)
    runner = re.search(r'id="redrive-runner">([^<]+)<', page.text)
    assert redriven is not None
    assert processed is not None
    assert runner is not None
    state = next(
        (s for s in ("finished", "interrupted", "failed") if f'id="redrive-{s}"' in page.text),
        "running",
    )
    return {
        "redriven": int(redriven[1]),
        "total": int(redriven[2]),
        "processed": int(processed[1]),
        "runner": runner[1],
        "state": state,
    }


def redrives(system: System, client_id: str) -> list[Any]:
    """The client's redrives: (the original's seq, how many times) in the redrives' order."""
    return system.sql(
        "SELECT o.seq, count(*) OVER (PARTITION BY r.redrive_of) AS times "
        "FROM events r JOIN events o ON o.id = r.redrive_of "
        "WHERE r.client_id = $1::uuid ORDER BY r.seq",
        client_id,
    )


def assert_each_once_in_order(system: System, client_id: str, count: int) -> None:
    rows = redrives(system, client_id)
    originals = [row["seq"] for row in rows]
    assert len(originals) == count
    assert originals == sorted(originals)  # the redrives' seqs follow the originals'
    assert {row["times"] for row in rows} == {1}  # never twice


def test_a_job_started_on_one_gateway_shows_its_progress_on_another(
    two_gateways: tuple[System, str],
) -> None:
    system, second = two_gateways
    tenant = system.create_client("redrive-two-gateways")
    dead_events(system, tenant["client_id"], 200)
    with operator(system, system.base_url, second) as (one, two):
        finished = run_two(one, two, tenant["client_id"])
    assert finished == {**finished, "state": "finished", "redriven": 200, "processed": 200}
    assert_each_once_in_order(system, tenant["client_id"], 200)


def run_two(one: httpx.Client, two: httpx.Client, client_id: str) -> dict[str, Any]:
    path = start_job(one, client_id)

    seen = job(two, path)  # read on the gateway that does not run it
    assert seen["total"] == 200
    assert seen["runner"] == job(one, path)["runner"]
    return dict(
        wait_for(lambda: (j := job(two, path))["state"] != "running" and j, 120, "the job to end")
    )


def test_a_job_whose_gateway_is_killed_is_interrupted_and_the_rest_redriven_once(
    two_gateways: tuple[System, str],
) -> None:
    system, second = two_gateways
    tenant = system.create_client("redrive-killed")
    total = 3000
    dead_events(system, tenant["client_id"], total)
    with operator(system, system.base_url, second) as (one, two):
        made = kill_mid_job(system, one, two, tenant["client_id"], total)
    assert 0 < made < total
    assert_each_once_in_order(system, tenant["client_id"], total)


def kill_mid_job(
    system: System, one: httpx.Client, two: httpx.Client, client_id: str, total: int
) -> int:
    """Start a job on the first gateway, SIGKILL it once the job has reported progress, see
    the job interrupted on the second, run the filter again there; how many the first made."""
    path = start_job(one, client_id)
    wait_for(lambda: job(two, path)["redriven"] > 0, 60, "the job's first report")

    system.processes["gateway"].send_signal(signal.SIGKILL)
    system.processes["gateway"].wait(timeout=10)

    interrupted = wait_for(
        lambda: (j := job(two, path))["state"] != "running" and j, 60, "the job to be marked"
    )
    assert interrupted["state"] == "interrupted"
    made = len(redrives(system, client_id))
    assert 0 < interrupted["redriven"] <= made < total  # how far it got, at least
    # The same filter again, on the surviving gateway: the rest
    again = start_job(two, client_id)
    rest = wait_for(lambda: (j := job(two, again))["state"] != "running" and j, 180, "the rest")
    assert rest["state"] == "finished"
    assert rest["total"] == total - made
    return made
