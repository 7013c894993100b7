"""Telling the supervisor a fact never raises: whether it was told is the answer."""

from __future__ import annotations

from actors.amqp import PublishFailed
from actors.broker import BrokerLink
from actors.protocol import Control, Tick
from actors.settings import Settings


class Publisher:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.told: list[tuple[Control, bool]] = []

    async def tell_supervisor(self, control: Control, *, persistent: bool = False) -> None:
        if self.error is not None:
            raise self.error
        self.told.append((control, persistent))


def link_with(publisher: Publisher | None) -> BrokerLink:
    link = BrokerLink(Settings(), "test")
    link.publisher = publisher  # type: ignore[assignment]
    return link


async def test_a_fact_the_broker_takes_is_told() -> None:
    publisher = Publisher()

    assert await link_with(publisher).tell_supervisor(Tick(), persistent=True)
    assert publisher.told == [(Tick(), True)]


async def test_without_a_connection_the_supervisor_is_not_told() -> None:
    assert not await link_with(None).tell_supervisor(Tick())


async def test_a_failed_publish_is_not_raised() -> None:
    assert not await link_with(Publisher(PublishFailed("nacked"))).tell_supervisor(Tick())
