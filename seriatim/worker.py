"""A worker process: the mailbox host, a supervisor candidate and the worker's heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from actors.addresses import NodeRing
from actors.broker import BrokerLink
from actors.handlers import load_handlers
from actors.heap import freeze_startup_objects
from actors.host import MailboxHost
from actors.metrics import refresh_journal_gauges, serve_metrics
from actors.middleware import load_middleware
from actors.outages import UNAVAILABLE
from actors.protocol import MAILBOX_ACTOR, WorkerStopped
from actors.settings import Settings
from actors.store import Journal
from actors.store.lease import Lease
from actors.watchdog import Watchdog, tick
from supervision.retention import retire_finished
from supervision.supervisor import WORKER_ALIVE_WITHIN, Supervisor

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_RETRY = 0.2  # a lost lease is renewed at once when the database is back
#: The default of SERIATIM_DRAIN_TIMEOUT: how long a stopping worker waits for its events.
DRAIN_DEADLINE = 30.0
#: A worker running a handler ends itself once its last successful heartbeat was sent this
#: long ago: half the liveness window, so that it is gone well before the supervisor can
#: take it for dead and move its mailboxes (actors/watchdog.py).
WATCHDOG_DEADLINE = WORKER_ALIVE_WITHIN / 2
#: The exit status of a worker that leaves with a handler call that never ended.
EXIT_HUNG = 70


def _exit_now(status: int) -> NoReturn:
    sys.stderr.flush()
    os._exit(status)


def new_worker_id() -> str:
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def dramatiq_broker(settings: Settings) -> dramatiq.Broker:
    """Dramatiq's broker and actor registry, with the middleware SERIATIM_MIDDLEWARE names
    (actors/middleware.py): mailboxes run their hooks around each attempt. Raises ImportError
    or SettingsError naming a bad one.

    Nothing connects here: the host consumes mailboxes itself (see docs/decisions.md). Were
    it to connect, pika tries the cluster's nodes in order, from this process's own offset.
    """
    middleware = load_middleware(settings.middleware)
    broker = RabbitmqBroker(
        url=NodeRing(settings.amqp_urls).order(), confirm_delivery=True, middleware=middleware
    )

    def mailbox(**_: Any) -> None:
        raise RuntimeError("mailbox messages are processed by the seriatim mailbox host")

    dramatiq.Actor(
        mailbox,
        broker=broker,
        actor_name=MAILBOX_ACTOR,
        queue_name=f"{settings.namespace}.mailbox",
        priority=0,
        options={},
    )
    return broker


async def run_worker(
    settings: Settings,
    stopping: asyncio.Event,
    worker_id: str | None = None,
    metrics_port: int | None = None,
    exit_now: Callable[[int], NoReturn] = _exit_now,
) -> None:
    """Serve mailboxes until `stopping` is set, then drain and leave cleanly.

    A handler call that has not ended after the drain cannot be stopped: the process then
    ends at once (`exit_now`), before it gives up its lease or its mailboxes, so that no
    other worker runs them while the call does."""
    worker_id = worker_id or new_worker_id()
    handlers = load_handlers(settings.handlers, demo=settings.demo)
    broker = dramatiq_broker(settings)
    journal = await Journal.connect(settings.database_url, min_size=2, max_size=10)
    try:
        await journal.check_durability()
        link_stopping = asyncio.Event()
        link = BrokerLink(settings, f"seriatim-worker-{worker_id}")
        watchdog = Watchdog(WATCHDOG_DEADLINE, margin=HEARTBEAT_INTERVAL)
        host = MailboxHost(settings, journal, handlers, broker, worker_id, link, watchdog)
        supervisor = Supervisor(settings, journal, link, worker_id)
        link.on_connect(host.attach)
        link.on_connect(supervisor.attach)
        log.info("worker %s starting (handlers: %s)", worker_id, ", ".join(handlers.types()))
        drained = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link.run(link_stopping))
            lease = Lease(
                settings.database_url,
                worker_id,
                socket.gethostname(),
                os.getpid(),
                watchdog.lapsing,
                lambda: supervisor.active,
            )
            heartbeat = tasks.create_task(_heartbeat(lease, watchdog, link, drained))
            watchdog.start()
            tasks.create_task(tick(watchdog, drained))
            tasks.create_task(host.passivate_idle(stopping))
            tasks.create_task(supervisor.run(stopping))
            tasks.create_task(supervisor.tick(stopping))
            tasks.create_task(refresh_journal_gauges(journal, stopping))
            tasks.create_task(retire_finished(journal, settings, stopping))
            if metrics_port is not None:
                tasks.create_task(
                    serve_metrics(settings.http_host, metrics_port, stopping, unready=host.unready)
                )
            freeze_startup_objects()
            await stopping.wait()
            log.info("worker %s stopping: draining in-flight events", worker_id)
            host.stop_taking()
            await supervisor.resign()
            await _mark_draining(journal, worker_id)
            unended = await host.drain(settings.drain_timeout)  # still heartbeating: they stay
            if unended:
                log.error(
                    "worker %s: %d handler call(s) never ended; exiting at once, so that their "
                    "mailboxes run nowhere else while they do",
                    worker_id,
                    unended,
                )
                exit_now(EXIT_HUNG)
            drained.set()
            watchdog.stop()
            await heartbeat  # no heartbeat may bring the worker's row back after it leaves
            await _leave(journal, link, worker_id)
            link_stopping.set()
    finally:
        await journal.close()
    log.info("worker %s stopped", worker_id)


async def _heartbeat(
    lease: Lease, watchdog: Watchdog, link: BrokerLink, stopping: asyncio.Event
) -> None:
    """Announce this worker once its command queue exists, then renew its lease every second."""
    await _first(link.connected.wait(), stopping)
    try:
        while not stopping.is_set():
            try:
                sent = time.monotonic()
                await lease.renew()
                watchdog.renewed(sent)
                interval = HEARTBEAT_INTERVAL
            except UNAVAILABLE as error:
                log.warning("heartbeat failed: %s", error)
                interval = HEARTBEAT_RETRY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
    finally:
        await lease.close()


async def _mark_draining(journal: Journal, worker_id: str) -> None:
    try:
        await journal.mark_draining(worker_id)
    except UNAVAILABLE as error:
        log.warning("could not mark this worker draining: %s", error)


async def _leave(journal: Journal, link: BrokerLink, worker_id: str) -> None:
    try:
        await journal.release_worker(worker_id)
        await journal.forget_worker(worker_id)
    except UNAVAILABLE as error:
        log.warning("could not release this worker's mailboxes: %s", error)
    await link.tell_supervisor(WorkerStopped(worker_id))


async def _first(awaitable: Any, stopping: asyncio.Event) -> None:
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stop):
        pending.cancel()
