"""One execution of a client's handlers at a time, whatever the handler does (I3).

Real gateway and worker processes; handlers from tests/fault/hostile_handlers.py that block
their thread past the timeout, block the event loop, or fail and back off while their worker
is frozen. The witness is the ledger those handlers write themselves (start and end of every
execution, CLOCK_MONOTONIC, pid, fence), not the journal: a run the journal never recorded
counts just the same. An execution of a process the test killed, or that ended itself, ends
when the process was seen dead.

Each test failed on main before the fix (35eeb40), as its docstring says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import harness, witness
from tests.fault.processes import (
    close_broker_connection,
    eventually,
    install_attempt_audit,
    log_of,
    now,
    start_workers,
    worker_id,
    writes,
)
from tests.harness import System, free_port, wait_for

pytestmark = pytest.mark.integration


def watch(ledger: Path, process: Any) -> None:
    """Mark `process` killed in the ledger as soon as it is seen dead (a thread waits)."""

    def wait() -> None:
        if process.wait() != 0:
            witness.mark_killed(ledger, process.pid)

    threading.Thread(target=wait, daemon=True).start()


@dataclasses.dataclass
class Rig:
    system: System
    answered: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def client_token(self, name: str) -> str:
        return self.system.token(self.system.admin_client(name))

    def post(self, token: str, type_: str, payload: dict[str, Any]) -> str:
        body = self.system.post_event(token, type_, payload)
        self.answered.setdefault(body["client_id"], []).append((body["seq"], body["id"]))
        return str(body["id"])

    def runs(self) -> list[witness.Execution]:
        return witness.read(self.system.ledger)

    def judge(self) -> witness.Judgement:
        """The witness against what was answered (handlers here may fail or time out)."""
        return witness.judge(self.system.ledger, self.answered, may_fail=True)

    def statuses(self, ids: list[str]) -> list[str]:
        rows = self.system.sql(
            "SELECT id::text, status FROM events WHERE id = ANY($1::uuid[])", ids
        )
        by_id = {row["id"]: row["status"] for row in rows}
        return [by_id[i] for i in ids]

    async def finished(self, ids: list[str], within: float) -> list[str]:
        await eventually(
            lambda: all(s in ("succeeded", "dead") for s in self.statuses(ids)),
            within,
            "every event to finish",
        )
        return self.statuses(ids)

    def start_workers(self, *names: str, ids: Mapping[str, str] | None = None) -> None:
        start_workers(self.system, *names, ids=ids)
        for name in names:
            watch(self.system.ledger, self.system.processes[name])


@pytest.fixture
def rig(
    request: pytest.FixtureRequest, services: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    """A gateway and no workers (each test starts its own), the hostile handlers loaded, the
    settings of the test's `settings` marker."""
    marker = request.node.get_closest_marker("settings")
    tmp = tmp_path_factory.mktemp("exclusion")
    env = {
        **witness.environment(tmp / "ledger.jsonl", "tests.fault.hostile_handlers"),
        **(marker.kwargs if marker else {}),
    }
    with harness.running_system(tmp, workers=0, env=env) as system:
        install_attempt_audit(system)
        yield Rig(system)


@pytest.mark.settings(
    SERIATIM_HANDLER_TIMEOUT="0.5",
    SERIATIM_MAX_ATTEMPTS="3",
    SERIATIM_BACKOFF_MIN="0.05",
    SERIATIM_BACKOFF_MAX="0.1",
)
async def test_a_plain_handler_past_its_timeout_overlaps_neither_its_retries_nor_later_events(
    rig: Rig,
) -> None:
    """A plain function sleeping 1.5 s against a 0.5 s timeout, three attempts, then two
    quick events. On main: attempts 1, 2 and 3 ran together, and the next events started
    while all three still ran (asyncio.to_thread cannot be stopped; the mailbox moved on)."""
    rig.start_workers("w1", "w2")
    token = rig.client_token("slow")
    ids = [rig.post(token, "hostile.sleep", {"ms": 1500})]
    ids += [rig.post(token, "hostile.sleep", {"ms": 10}) for _ in range(2)]

    statuses = await rig.finished(ids, 60)

    runs = rig.runs()
    assert statuses == ["dead", "succeeded", "succeeded"]
    assert [(run.seq, run.attempt) for run in runs] == [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)]
    assert all(run.end is not None for run in runs)
    judgement = rig.judge()
    assert judgement.ok, judgement
    error = rig.system.sql("SELECT error->>'type' FROM events WHERE id = $1::uuid", ids[0])
    assert error[0][0] == "HandlerTimeout"


@pytest.mark.settings(
    SERIATIM_HANDLER_TIMEOUT="0.5",
    SERIATIM_MAX_ATTEMPTS="2",
    SERIATIM_BACKOFF_MIN="0.05",
    SERIATIM_BACKOFF_MAX="0.1",
)
async def test_an_async_handler_ignoring_its_cancellation_is_waited_for(rig: Rig) -> None:
    """An async handler that swallows the timeout's cancellation and sleeps on (1.5 s against
    0.5 s), then a quick event: nothing overlaps, and the late finish is a HandlerTimeout.
    On main the overlap check passed (the mailbox awaited the coroutine inline), but the late
    finish was recorded as a success: statuses were ['succeeded', 'succeeded']."""
    rig.start_workers("w1")
    token = rig.client_token("stubborn")
    ids = [rig.post(token, "hostile.stubborn", {"ms": 1500})]
    ids.append(rig.post(token, "hostile.sleep", {"ms": 10}))

    statuses = await rig.finished(ids, 60)

    assert statuses == ["dead", "succeeded"]
    assert [(run.seq, run.attempt) for run in rig.runs()] == [(1, 1), (1, 2), (2, 1)]
    judgement = rig.judge()
    assert judgement.ok, judgement


@pytest.mark.settings(
    SERIATIM_HANDLER_TIMEOUT="0.3", SERIATIM_MAX_ATTEMPTS="1", SERIATIM_HANDLER_THREADS="4"
)
async def test_hung_plain_handlers_never_keep_another_client_s_handler_from_running(
    rig: Rig,
) -> None:
    """Seven clients' plain handlers hang (4 s) on one worker with 4 handler threads; an
    eighth client's 10 ms handler waits for a slot and then runs: it never ends dead without
    having run. While every slot is hung the worker says so in /readyz and its metrics.
    On main: the default executor has min(32, cores + 4) threads (6 here), so the eighth
    call's timeout ran out while it waited, and it ended dead without ever running."""
    port = free_port()
    worker = rig.system.spawn("w1", "worker", "--metrics-port", str(port))
    watch(rig.system.ledger, worker)
    wait_for(lambda: worker_id(rig.system, "w1"), 30, "the worker to register")
    hung = [
        rig.post(rig.client_token(f"hung-{n}"), "hostile.sleep", {"ms": 4000}) for n in range(7)
    ]
    await eventually(lambda: len(rig.runs()) >= 4, 30, "calls to hang")
    readiness = await asyncio.to_thread(_unready, port)
    metrics = _get(port, "/metrics").text

    quick = rig.post(rig.client_token("quick"), "hostile.sleep", {"ms": 10})
    statuses = await rig.finished([*hung, quick], 60)

    assert statuses == ["dead"] * 7 + ["succeeded"]
    assert [run.end is not None for run in rig.runs()] == [True] * 8
    assert readiness.status_code == 503
    assert "handler threads hold calls past their timeout" in readiness.text
    assert 'seriatim_handler_threads{state="overdue"} 4.0' in metrics
    assert _get(port, "/readyz").status_code == 200


@pytest.mark.settings(SERIATIM_MAX_ATTEMPTS="3")
async def test_an_async_handler_blocking_the_loop_ends_its_worker_before_the_mailbox_moves(
    rig: Rig,
) -> None:
    """An async handler blocks its worker's event loop for 20 s on its first attempt, with
    two quick events behind it. The watchdog ends that worker (half the liveness window) and
    the mailbox runs on the other worker only after it died. On main: the blocked worker
    stopped heartbeating, the mailbox was placed on the other worker, which ran the event
    again at +14 s and then the two behind it while the first execution still ran."""
    rig.start_workers("w1", "w2")
    token = rig.client_token("blocker")
    ids = [rig.post(token, "hostile.block_loop", {"ms": 20000})]
    await eventually(lambda: rig.runs(), 30, "the blocking handler to start")
    ids += [rig.post(token, "hostile.sleep", {"ms": 10}) for _ in range(2)]
    blocked_pid = rig.runs()[0].pid
    blocked = next(n for n, p in rig.system.processes.items() if p.pid == blocked_pid)

    statuses = await rig.finished(ids, 60)

    assert rig.system.processes[blocked].wait(timeout=30) == -signal.SIGKILL
    assert "watchdog" in (rig.system.tmp / f"{blocked}.log").read_text()
    assert statuses == ["succeeded"] * 3
    runs = rig.runs()
    assert [(run.seq, run.attempt) for run in runs] == [(1, 1), (1, 2), (2, 1), (3, 1)]
    assert runs[1].pid != blocked_pid
    judgement = rig.judge()
    assert judgement.ok, judgement


@pytest.mark.settings(SERIATIM_BACKOFF_MIN="3", SERIATIM_BACKOFF_MAX="3")
async def test_a_frozen_worker_resumed_during_the_new_owner_s_attempt_starts_and_records_nothing(
    rig: Rig,
) -> None:
    """Worker A's first attempt fails and A backs off (3 s); A is frozen (SIGSTOP) and its
    broker connection cut, so the mailbox moves to B, whose attempt 2 runs 4 s. A is resumed
    in the middle of it. A must start no attempt and write nothing after it resumed, and B's
    execution carries a higher fence than anything A ran with.
    On main: A's backoff ended at its resumption and A started attempt 3 beside B's attempt
    2 (nothing checked who owned the mailbox)."""
    rig.start_workers("a", "b")
    payload = {"ms": 4000, "first_attempts": 1, "first_ms": 0, "fail_first": True}
    token = rig.client_token("zombie")
    first = rig.post(token, "hostile.sleep", payload)
    await eventually(lambda: [r for r in rig.runs() if r.end is not None], 30, "attempt 1 to fail")
    a_pid = rig.runs()[0].pid
    a = next(n for n, p in rig.system.processes.items() if p.pid == a_pid)
    a_id = worker_id(rig.system, a)
    assert a_id is not None
    rig.system.processes[a].send_signal(signal.SIGSTOP)
    try:
        await asyncio.to_thread(close_broker_connection, a_id)
        await eventually(lambda: [r for r in rig.runs() if r.pid != a_pid], 60, "B to take over")
    finally:
        rig.system.processes[a].send_signal(signal.SIGCONT)
    resumed, resumed_at = time.monotonic(), now()
    later = rig.post(token, "hostile.sleep", {"ms": 10})

    statuses = await rig.finished([first, later], 60)
    await asyncio.sleep(1)  # whatever A would still do after its resumption, let it show

    runs = rig.runs()
    assert statuses == ["succeeded", "succeeded"]
    assert [run for run in runs if run.pid == a_pid and run.start > resumed] == []
    assert [w for w in writes(rig.system, "at > $1", resumed_at) if w.process == a] == []
    b_runs = [run for run in runs if run.pid != a_pid]
    assert min(run.fence for run in b_runs) > max(run.fence for run in runs if run.pid == a_pid)
    judgement = rig.judge()
    assert judgement.ok, judgement


async def test_a_draining_worker_s_last_execution_ends_before_another_worker_runs_the_mailbox(
    rig: Rig,
) -> None:
    """SIGTERM while a 3 s plain handler runs, with events posted during the drain: the
    draining worker finishes it and leaves; the other worker catches up only after it (the
    mailbox is not placed elsewhere while its worker is alive, and no catch-up overlaps).
    This passed on main too: main did not move a draining worker's mailbox either. The next
    test is the drain that goes wrong."""
    rig.start_workers("w1", "w2")
    token = rig.client_token("drained")
    ids = [rig.post(token, "hostile.sleep", {"ms": 3000})]
    await eventually(lambda: rig.runs(), 30, "the long handler to start")
    first = rig.runs()[0]
    draining = next(n for n, p in rig.system.processes.items() if p.pid == first.pid)
    rig.system.processes[draining].send_signal(signal.SIGTERM)
    ids += [rig.post(token, "hostile.sleep", {"ms": 10}) for _ in range(3)]

    statuses = await rig.finished(ids, 60)

    assert rig.system.processes[draining].wait(timeout=40) == 0
    assert statuses == ["succeeded"] * 4
    runs = rig.runs()
    assert [(run.seq, run.attempt) for run in runs] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    judgement = rig.judge()
    assert judgement.ok, judgement


@pytest.mark.settings(SERIATIM_DRAIN_TIMEOUT="1")
async def test_a_handler_outliving_the_drain_ends_with_its_worker_before_the_mailbox_moves(
    rig: Rig,
) -> None:
    """SIGTERM while a 4 s plain handler runs, with a 1 s drain: the call cannot be stopped,
    so the worker exits (status 70) before it releases its mailboxes, and the other worker
    runs the event again only after that. Planted on main (its drain deadline set to 1 s, as
    this setting did not exist): the drain cancelled the task, requeued the message and
    released the mailbox while the thread still ran, and the other worker ran the event
    beside it (overlaps=1)."""
    rig.start_workers("w1", "w2")
    token = rig.client_token("outlived")
    ids = [rig.post(token, "hostile.sleep", {"ms": 4000})]
    await eventually(lambda: rig.runs(), 30, "the long handler to start")
    draining = next(n for n, p in rig.system.processes.items() if p.pid == rig.runs()[0].pid)
    rig.system.processes[draining].send_signal(signal.SIGTERM)
    ids.append(rig.post(token, "hostile.sleep", {"ms": 10}))

    statuses = await rig.finished(ids, 60)

    code = rig.system.processes[draining].wait(timeout=40)
    judgement = rig.judge()
    assert judgement.ok, judgement
    assert statuses == ["succeeded", "succeeded"]
    assert code == 70
    runs = rig.runs()
    assert [(run.seq, run.attempt) for run in runs] == [(1, 1), (1, 2), (2, 1)]
    assert runs[0].raised == witness.KILLED


async def test_a_supervisor_that_loses_its_slot_while_placing_cannot_place_a_second_owner(
    rig: Rig,
) -> None:
    """The active supervisor (w1) is stuck placing a mailbox (the test holds the client row)
    when its broker connection is cut: it loses the supervisor queue's single-active slot, and
    w2's supervisor takes over and tries to place the same mailbox. When the row is let go,
    both placements run, one after the other: the second must find the mailbox active on a
    live worker and leave it. Exactly one worker starts the mailbox, and the event runs once.
    The two supervisors pick different workers: w1's chose while it was the only worker, and
    w2's breaks the tie between two idle workers by the lower worker id, which is w2's here.
    Not a witness of the guard on its own: planted (the liveness condition taken out of
    `place_mailboxes`), this still passes, because w1's placement commits first and its
    StartMailbox cannot be sent on the cut connection, so w2's later placement wins before w1
    starts anything. The guard is proven by tests/integration/test_fencing.py's
    stale-supervisor test (red with that plant); this one shows the whole race on real
    processes, with the two placements aimed at different workers, ends with one owner."""
    token = rig.client_token("contested")
    ids = [rig.post(token, "hostile.sleep", {"ms": 10})]  # accepted while no worker runs
    (client,) = rig.answered
    holder = await asyncpg.connect(harness.database_url(rig.system.database, rig.system.pg_url))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM clients WHERE id = $1::uuid FOR SHARE", client)
        rig.start_workers("w1", ids={"w1": "placement-w1-first"})
        await eventually(lambda: _waiting_for_a_lock(rig.system, "w1"), 30, "w1 to place")
        rig.start_workers("w2", ids={"w2": "placement-a-w2-second"})
        w1 = worker_id(rig.system, "w1")
        assert w1 is not None
        await asyncio.to_thread(close_broker_connection, w1)
        await eventually(lambda: _waiting_for_a_lock(rig.system, "w2"), 30, "w2 to place")
        await transaction.rollback()
    finally:
        await holder.close()

    statuses = await rig.finished(ids, 60)

    await asyncio.sleep(2)  # let a second owner, if any, show itself
    started = [
        name for name in ("w1", "w2") if f"mailbox {client} active on" in log_of(rig.system, name)
    ]
    assert statuses == ["succeeded"]
    assert len(started) == 1, started
    assert [(run.seq, run.attempt) for run in rig.runs()] == [(1, 1)]
    judgement = rig.judge()
    assert judgement.ok, judgement


def _waiting_for_a_lock(system: System, name: str) -> bool:
    rows = system.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 "
        "AND wait_event_type = 'Lock'",
        system.database,
        name,
    )
    return int(rows[0][0]) > 0


def _unready(port: int) -> httpx.Response:
    """The worker's /readyz once it answers 503, or its last answer after 10 s."""
    deadline = time.monotonic() + 10
    while (response := _get(port, "/readyz")).status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    return response


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
