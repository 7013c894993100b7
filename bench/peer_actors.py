"""The Dramatiq peer's actors: one no-op actor per queue, on Dramatiq's stock RabbitmqBroker.

Loaded by the stock `dramatiq` worker that bench/peer.py starts. Each call appends one byte to
a per-process file so that the benchmark can count finished messages from outside.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

PREFIX = os.environ.get("PEER_PREFIX", "peer")
QUEUES = int(os.environ.get("PEER_QUEUES", "200"))
COUNT_DIR = os.environ.get("PEER_COUNT_DIR", "/tmp")

broker = RabbitmqBroker(
    url=os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    confirm_delivery=True,
)
dramatiq.set_broker(broker)

_counter: list[int] = []


def noop() -> None:
    if not _counter:
        path = os.path.join(COUNT_DIR, str(os.getpid()))
        _counter.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.write(_counter[0], b".")


for n in range(QUEUES):
    dramatiq.actor(noop, actor_name=f"noop{n}", queue_name=f"{PREFIX}{n}")
