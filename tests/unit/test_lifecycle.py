"""A hosted mailbox's lifecycle: the allowed moves, the refused ones, and the host keeping to
them in the races the stages exist for (a mailbox let go while it subscribes or passivates).

Fakes stand in for the broker and the journal, as in test_host_catch_up.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from actors.channels import CONSUME_CHANNELS
from actors.handlers import HandlerRegistry
from actors.host import MailboxHost
from actors.lifecycle import TRANSITIONS, ForbiddenTransition, Hosted, Stage
from actors.mailbox import Mailbox, RunPolicy
from actors.settings import Settings
from actors.states import DeadEventPolicy, MailboxState
from actors.store.rows import Position

CLIENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000002")
WORKER = "w-1"

ALLOWED = [
    (Stage.STARTING, Stage.SUBSCRIBING),
    (Stage.STARTING, Stage.LEAVING),
    (Stage.STARTING, Stage.STOPPED),
    (Stage.SUBSCRIBING, Stage.CONSUMING),
    (Stage.SUBSCRIBING, Stage.STARTING),
    (Stage.SUBSCRIBING, Stage.LEAVING),
    (Stage.SUBSCRIBING, Stage.STOPPED),
    (Stage.CONSUMING, Stage.STARTING),
    (Stage.CONSUMING, Stage.PASSIVATING),
    (Stage.CONSUMING, Stage.LEAVING),
    (Stage.CONSUMING, Stage.STOPPED),
    (Stage.PASSIVATING, Stage.STARTING),
    (Stage.PASSIVATING, Stage.LEAVING),
    (Stage.PASSIVATING, Stage.STOPPED),
    (Stage.LEAVING, Stage.STOPPED),
]
REFUSED = sorted(set(itertools.product(Stage, Stage)) - set(ALLOWED), key=lambda move: str(move))


def hosted(stage: Stage) -> Hosted:
    mailbox = Mailbox(CLIENT, None, HandlerRegistry(), RunPolicy(), StubBroker(), "q")  # type: ignore[arg-type]
    return Hosted(mailbox, stage=stage)


def test_the_table_is_exactly_the_allowed_moves() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == set(ALLOWED)


@pytest.mark.parametrize(("before", "after"), ALLOWED)
def test_an_allowed_move_is_made(before: Stage, after: Stage) -> None:
    entry = hosted(before)

    entry.move(after)

    assert entry.stage is after


@pytest.mark.parametrize(("before", "after"), REFUSED)
def test_a_refused_move_raises_is_logged_and_changes_nothing(
    before: Stage, after: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    entry = hosted(before)

    with caplog.at_level(logging.ERROR), pytest.raises(ForbiddenTransition):
        entry.move(after)

    assert entry.stage is before
    assert f"cannot move from {before.value} to {after.value}" in caplog.text


def test_a_stopped_mailbox_stays_stopped_when_let_go_or_forgotten_again() -> None:
    entry = hosted(Stage.STOPPED)

    entry.leave()
    entry.forget()

    assert entry.stage is Stage.STOPPED


def test_only_a_starting_mailbox_begins_to_subscribe() -> None:
    assert hosted(Stage.STARTING).subscribing()
    for stage in set(Stage) - {Stage.STARTING}:
        entry = hosted(stage)
        assert not entry.subscribing()
        assert entry.stage is stage


def test_losing_the_consumer_takes_a_consuming_mailbox_back_to_starting_only() -> None:
    consuming, passivating = hosted(Stage.CONSUMING), hosted(Stage.PASSIVATING)
    consuming.consumer_tag = passivating.consumer_tag = "ctag"

    consuming.unsubscribed()
    passivating.unsubscribed()

    assert (consuming.stage, consuming.consumer_tag) == (Stage.STARTING, None)
    assert (passivating.stage, passivating.consumer_tag) == (Stage.PASSIVATING, None)


def test_deliveries_are_taken_until_the_mailbox_is_on_its_way_out() -> None:
    taking = {stage for stage in Stage if stage.takes_deliveries}

    assert taking == {Stage.STARTING, Stage.SUBSCRIBING, Stage.CONSUMING}


# --- the host keeps to the table -------------------------------------------------------------


class Journal:
    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.release_gate = asyncio.Event()

    async def position(self, client_id: uuid.UUID) -> Position:
        return Position(0, 0, MailboxState.ACTIVE, DeadEventPolicy.SKIP, None, None, WORKER, 1)

    async def release_mailbox(
        self, client_id: uuid.UUID, worker_id: str, *, epoch: int | None = None
    ) -> None:
        self.released.set()
        await self.release_gate.wait()
        raise ConnectionRefusedError("the journal is restarting")  # an outage: it would resume


class Channel:
    is_open = True

    def __init__(self) -> None:
        self.consume_gate = asyncio.Event()
        self.consume_gate.set()
        self.cancelled: list[str] = []
        self.consumers = 0

    def declare_queue_nowait(self, name: str, arguments: Any = None) -> None:
        pass

    async def consume(self, queue: str, on_message: Any, on_cancel: Any = None) -> str:
        await self.consume_gate.wait()
        self.consumers += 1
        return f"ctag-{self.consumers}"

    async def cancel(self, consumer_tag: str) -> None:
        self.cancelled.append(consumer_tag)


class Publisher:
    async def delete_idle_mailbox(self, client_id: str) -> bool:
        return True

    async def tell_supervisor(self, control: Any, *, persistent: bool = False) -> None:
        pass


class Link:
    publisher = Publisher()

    async def tell_supervisor(self, fact: Any, *, persistent: bool = False) -> bool:
        return True


def host_with(journal: Journal, channel: Channel) -> MailboxHost:
    host = MailboxHost(
        Settings(),
        journal,  # type: ignore[arg-type]
        HandlerRegistry(),
        StubBroker(),
        WORKER,
        Link(),  # type: ignore[arg-type]
    )
    host._channels.channels = [channel] * CONSUME_CHANNELS  # type: ignore[list-item]
    return host


async def test_a_started_mailbox_consumes() -> None:
    channel = Channel()
    host = host_with(Journal(), channel)

    await host.start(CLIENT, 1)

    entry = host._active[CLIENT]
    assert (entry.stage, entry.consumer_tag) == (Stage.CONSUMING, "ctag-1")


async def test_a_mailbox_let_go_while_it_subscribes_cancels_the_consumer_it_then_gets() -> None:
    # Given a subscription waiting for the broker
    channel = Channel()
    channel.consume_gate.clear()
    host = host_with(Journal(), channel)
    starting = asyncio.ensure_future(host.start(CLIENT, 1))
    await asyncio.sleep(0)
    entry = host._active[CLIENT]
    assert entry.stage is Stage.SUBSCRIBING

    # When the mailbox is let go, then the broker registers the consumer
    await host._let_go(entry)
    channel.consume_gate.set()
    await starting

    # Then the consumer is cancelled at once, and the mailbox stays forgotten
    assert entry.stage is Stage.STOPPED
    assert channel.cancelled == ["ctag-1"]
    assert CLIENT not in host._active


async def test_a_passivation_that_fails_after_the_mailbox_was_let_go_does_not_resume_it() -> None:
    # Given a passivation waiting for the journal
    journal, channel = Journal(), Channel()
    host = host_with(journal, channel)
    await host.start(CLIENT, 1)
    entry = host._active[CLIENT]
    passivating = asyncio.ensure_future(host._passivate(entry))
    await journal.released.wait()
    assert entry.stage is Stage.PASSIVATING

    # When the mailbox is let go meanwhile, and the release then fails
    await host._let_go(entry)
    journal.release_gate.set()
    await passivating

    # Then it is not subscribed again
    assert entry.stage is Stage.STOPPED
    assert channel.consumers == 1
    assert CLIENT not in host._active


async def test_a_passivation_that_fails_resumes_consuming() -> None:
    journal, channel = Journal(), Channel()
    journal.release_gate.set()
    host = host_with(journal, channel)
    await host.start(CLIENT, 1)
    entry = host._active[CLIENT]

    await host._passivate(entry)

    assert (entry.stage, entry.consumer_tag) == (Stage.CONSUMING, "ctag-2")
    assert host._active[CLIENT] is entry


async def test_a_passivating_mailbox_that_loses_its_consumer_is_not_subscribed_again() -> None:
    channel = Channel()
    host = host_with(Journal(), channel)
    await host.start(CLIENT, 1)
    entry = host._active[CLIENT]
    entry.move(Stage.PASSIVATING)

    entry.unsubscribed()
    await host._subscribe(entry)

    assert entry.stage is Stage.PASSIVATING
    assert channel.consumers == 1
