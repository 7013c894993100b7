"""The mailbox actor against a real journal: hooks, the seq rule, the fence, attempts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from actors.backoff import Backoff
from actors.handlers import Event, HandlerRegistry, load_handlers
from actors.mailbox import Escalate, Mailbox, RunPolicy, Stopped
from actors.policy import RestartIntensity
from actors.protocol import EventMessage
from actors.store import Journal

pytestmark = pytest.mark.integration


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
    assert recorder.calls[1][2] is not None  # the failed first attempt carries its exception
    assert recorder.calls[3][2] is None


async def test_a_later_seq_first_fills_the_gap_from_the_journal(journal: Journal) -> None:
    client = await journal.create_client("gap", "x", False)
    first = await accept(journal, client, "demo.echo", {"n": 1})
    second = await accept(journal, client, "demo.echo", {"n": 2})
    third = await accept(journal, client, "demo.echo", {"n": 3})
    box = mailbox(journal, client, load_handlers(()))

    await box.process(third)  # 1 and 2 never arrived
    await box.process(first)  # late duplicates change nothing
    await box.process(second)

    rows = await journal.events(client, after_seq=0, status=None, limit=10)
    assert [(r.seq, r.status, r.attempts) for r in rows] == [
        (1, "succeeded", 1),
        (2, "succeeded", 1),
        (3, "succeeded", 1),
    ]
    assert rows[0].finished_at <= rows[1].started_at  # type: ignore[operator]
    assert rows[1].finished_at <= rows[2].started_at  # type: ignore[operator]


async def test_two_mailboxes_racing_for_one_event_record_one_outcome(journal: Journal) -> None:
    # Given two processes' mailboxes for the same client (a zombie and its successor)
    client = await journal.create_client("race", "x", False)
    runs: list[int] = []
    handlers = HandlerRegistry()

    async def slow(event: Event) -> dict[str, int]:
        runs.append(event.attempt)
        await asyncio.sleep(0.05)
        return {"attempt": event.attempt}

    handlers.register("test.slow", slow)
    message = await accept(journal, client, "test.slow", {})

    # When both process the same message at once
    await asyncio.gather(
        mailbox(journal, client, handlers).process(message),
        mailbox(journal, client, handlers).process(message),
    )

    # Then the fence let exactly one outcome through, and done_seq moved once
    row = await journal.event(client, message.event_id)
    assert row is not None
    assert row.status == "succeeded"
    assert row.result in ({"attempt": 1}, {"attempt": 2})
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
