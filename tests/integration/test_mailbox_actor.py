"""The mailbox actor against a real journal: hooks, the seq rule, the fence, attempts.

Order and overlap are judged from the witness ledger the handlers write (tests/witness.py),
not from the journal's timestamps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.backoff import Backoff
from actors.handlers import Event, HandlerRegistry, load_handlers
from actors.mailbox import Escalate, Mailbox, RunPolicy, Stopped
from actors.policy import RestartIntensity
from actors.protocol import EventMessage
from actors.store import Journal
from tests import witness
from tests.fault.oracle import AUDIT

pytestmark = pytest.mark.integration

WITNESSED = ("tests.witnessed_handlers",)


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The witness ledger that witnessed handlers run in this process write."""
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(witness.LEDGER_ENV, str(path))
    return path


@pytest.fixture
async def other_journal(database: str) -> AsyncIterator[Journal]:
    """A second journal on the same database: what another worker process has."""
    journal = await Journal.connect(database, min_size=1, max_size=4)
    yield journal
    await journal.close()


async def install_outcome_audit(database: str) -> None:
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(AUDIT)
    finally:
        await connection.close()


class Recorder(dramatiq.Middleware):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:  # type: ignore[type-arg]
        self.calls.append(("before", message.message_id, None))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,  # type: ignore[type-arg]
        *,
        result: Any = None,
        exception: Any = None,
    ) -> None:
        self.calls.append(("after", message.message_id, exception))

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:  # type: ignore[type-arg]
        self.calls.append(("skip", message.message_id, None))


def mailbox(
    journal: Journal,
    client_id: uuid.UUID,
    handlers: HandlerRegistry,
    recorder: Recorder | None = None,
    max_attempts: int = 3,
) -> Mailbox:
    broker = StubBroker(middleware=[recorder] if recorder else [])
    policy = RunPolicy(max_attempts=max_attempts, handler_timeout=5, backoff=Backoff(0.001, 0.002))
    return Mailbox(client_id, journal, handlers, policy, broker, "test.mailbox")


async def accept(
    journal: Journal, client_id: uuid.UUID, type_: str, payload: dict[str, Any]
) -> EventMessage:
    accepted = await journal.accept(client_id, type_, payload)
    assert accepted is not None
    return EventMessage.of(accepted.event)


async def test_every_attempt_passes_through_the_dramatiq_middleware_hooks(
    journal: Journal,
) -> None:
    client = await journal.create_client("hooks", "x", False)
    recorder = Recorder()
    message = await accept(journal, client, "demo.fail", {"times": 1})

    await mailbox(journal, client, load_handlers(()), recorder).process(message)

    event_id = str(message.event_id)
    assert [(kind, mid) for kind, mid, _ in recorder.calls] == [
        ("before", event_id),
        ("after", event_id),
        ("before", event_id),
        ("after", event_id),
    ]
    assert isinstance(recorder.calls[1][2], RuntimeError)  # what the handler raised itself
    assert str(recorder.calls[1][2]) == "demo.fail: attempt 1 of 1 planned failures"
    assert recorder.calls[3][2] is None


async def test_a_duplicate_delivery_is_a_skipped_message_for_the_middleware(
    journal: Journal,
) -> None:
    client = await journal.create_client("duplicate hooks", "x", False)
    recorder = Recorder()
    message = await accept(journal, client, "demo.echo", {})
    box = mailbox(journal, client, load_handlers(()), recorder)
    await box.process(message)

    await box.process(message)

    event_id = str(message.event_id)
    assert [(kind, mid) for kind, mid, _ in recorder.calls] == [
        ("before", event_id),
        ("after", event_id),
        ("skip", event_id),
    ]


async def test_a_later_seq_first_fills_the_gap_from_the_journal(
    journal: Journal, ledger: Path
) -> None:
    client = await journal.create_client("gap", "x", False)
    first = await accept(journal, client, "witnessed.echo", {"n": 1})
    second = await accept(journal, client, "witnessed.echo", {"n": 2})
    third = await accept(journal, client, "witnessed.echo", {"n": 3})
    box = mailbox(journal, client, load_handlers(WITNESSED))

    await box.process(third)  # 1 and 2 never arrived
    await box.process(first)  # late duplicates change nothing
    await box.process(second)

    rows = await journal.events(client, after_seq=0, status=None, limit=10)
    assert [(r.seq, r.status, r.attempts) for r in rows] == [
        (1, "succeeded", 1),
        (2, "succeeded", 1),
        (3, "succeeded", 1),
    ]
    answered = {str(client): [(m.seq, str(m.event_id)) for m in (first, second, third)]}
    judgement = witness.judge(ledger, answered)
    assert judgement.ok, judgement
    assert judgement.executions == 3


async def test_two_deliveries_to_one_mailbox_at_once_run_one_after_the_other(
    journal: Journal, ledger: Path
) -> None:
    """Planted: Mailbox.process without `async with self._lock` → fails with
    `AssertionError: executions=3 overlaps=1 ...`: the second delivery, finding done_seq 0,
    fills the gap by running seq 1 a second time, at once."""
    # Given one mailbox and two events, the first a slow one
    client = await journal.create_client("lock", "x", False)
    slow = await accept(journal, client, "witnessed.sleep", {"ms": 200})
    quick = await accept(journal, client, "witnessed.echo", {"n": 2})
    box = mailbox(journal, client, load_handlers(WITNESSED))

    # When both are delivered at once (a redelivery racing the original, in one process)
    await asyncio.gather(box.process(slow), box.process(quick))

    # Then the witness saw each run once, one after the other
    answered = {str(client): [(m.seq, str(m.event_id)) for m in (slow, quick)]}
    judgement = witness.judge(ledger, answered)
    assert judgement.ok, judgement
    assert judgement.executions == 2


async def test_two_mailboxes_racing_for_one_event_record_one_outcome(
    journal: Journal, other_journal: Journal, database: str, ledger: Path
) -> None:
    """Planted: the fence `AND c.done_seq = $3::bigint - 1` removed from record_outcome in
    queries.sql (the single-row form a batch of one runs; `input.seq - 1` in record_outcomes
    for larger batches) → fails with `assert 2 == 1` (two outcome writes in the audit).

    Before, the handler runs were recorded and never looked at (both mailboxes shared one
    journal, whose group commit could give the second mark_attempt None, so that the race
    might not happen at all), and the final checks held without a fence."""
    # Given two processes' mailboxes for the same client (a zombie and its successor), each
    # with its own journal, and the outcome audit
    await install_outcome_audit(database)
    client = await journal.create_client("race", "x", False)
    both_running = asyncio.Event()
    handlers = HandlerRegistry()

    async def slow(event: Event) -> dict[str, int]:
        with witness.executing(event):
            if len(witness.read(ledger)) == 2:
                both_running.set()
            await asyncio.wait_for(both_running.wait(), 10)  # the race, for certain
            await asyncio.sleep(0.05)
            return {"attempt": event.attempt}

    handlers.register("test.slow", slow)
    message = await accept(journal, client, "test.slow", {})

    # When both process the same message at once
    await asyncio.gather(
        mailbox(journal, client, handlers).process(message),
        mailbox(other_journal, client, handlers).process(message),
    )

    # Then both handlers really ran, at once, as attempts 1 and 2, and ended
    runs = witness.read(ledger)
    assert sorted(run.attempt for run in runs) == [1, 2]
    assert all(run.end is not None and run.raised is None for run in runs)
    first, second = runs
    assert second.start < (first.end or 0)

    # And the fence let exactly one outcome through, one of those runs', and done_seq
    # moved once
    writes = await journal.pool.fetch(
        "SELECT status FROM outcome_audit WHERE event_id = $1", message.event_id
    )
    assert len(writes) == 1
    row = await journal.event(client, message.event_id)
    assert row is not None
    assert (row.status, row.attempts) == ("succeeded", row.result["attempt"])
    assert row.result["attempt"] in {run.attempt for run in runs}
    position = await journal.position(client)
    assert position is not None
    assert position.done_seq == 1


async def test_attempts_survive_a_new_mailbox_and_end_in_dead(journal: Journal) -> None:
    # Given an event whose attempts were used up by workers that crashed mid-handler
    client = await journal.create_client("crashes", "x", False)
    message = await accept(journal, client, "demo.echo", {})
    for _ in range(3):
        assert await journal.mark_attempt(message.event_id, epoch=None) is not None

    # When a fresh mailbox gets it, the handler is not run again
    await mailbox(journal, client, load_handlers(()), max_attempts=3).process(message)

    row = await journal.event(client, message.event_id)
    assert row is not None
    assert row.status == "dead"
    assert row.error["type"] == "AttemptsExhausted"


async def test_after_an_escalation_no_further_attempt_runs_while_others_wait(
    journal: Journal,
) -> None:
    # A client allowed 2 restarts, whose event keeps failing, with a catch-up from the
    # journal waiting for the mailbox's lock behind the delivered event.
    client = await journal.create_client("escalates-once", "x", False)
    message = await accept(journal, client, "demo.fail", {"times": 100})
    policy = RunPolicy(
        max_attempts=5,
        handler_timeout=5,
        backoff=Backoff(0.001, 0.002),
        intensity=RestartIntensity(max_restarts=2, within=60),
    )
    box = Mailbox(client, journal, load_handlers(()), policy, StubBroker(), "test.mailbox")

    delivered, caught_up = await asyncio.gather(
        box.process(message), box.catch_up(), return_exceptions=True
    )

    # The third failure escalates; the catch-up that got the lock next runs nothing.
    assert isinstance(delivered, Escalate)
    assert isinstance(caught_up, Stopped)
    event = await journal.event(client, message.event_id)
    assert event is not None
    assert (event.status, event.attempts) == ("retrying", 3)
