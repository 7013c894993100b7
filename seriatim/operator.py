"""The operator's command line reaches the gateway's own operations (gateway/operations.py)
on a host that reaches the database: this builds the same Services a gateway has, for one
command, with the audit log naming the command line as the actor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import uuid
from collections.abc import AsyncIterator

from actors.broker import BrokerLink
from actors.handlers import load_handlers
from actors.settings import Settings
from actors.store import Journal
from actors.store.audit import AuditLog
from gateway.services import Services
from gateway.tokens import load_tokens

#: The audit log's actor for the command line (no client signs it in); the detail of each of
#: its entries says so and names the operating-system user who ran it.
CLI_ACTOR = uuid.UUID(int=0)
CONNECT_WITHIN = 5.0  # seconds to wait for RabbitMQ; events are left to the relay after that


def _user() -> str:
    """The operating-system user running the command, by its effective uid (not $USER or
    $LOGNAME, which whoever runs it can set to any name)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name[:64]
    except (OSError, KeyError):
        return f"uid {os.geteuid()}"


@contextlib.asynccontextmanager
async def operator_services(settings: Settings, *, broker: bool = False) -> AsyncIterator[Services]:
    """A gateway's services for one command; `broker` connects to RabbitMQ too (to publish
    a redrive, or to wake the supervisor after a resume)."""
    handlers = load_handlers((), demo=False)  # operators need no handler code: none imported
    journal = await Journal.connect(settings.database_url, min_size=1, max_size=2)
    try:
        tokens = await load_tokens(settings, journal)
        link = BrokerLink(settings, "seriatim-cli")
        services = Services.create(settings, journal, tokens, handlers, link)
        services = dataclasses.replace(
            services, audit=AuditLog(journal.pool, origin={"via": "cli", "os_user": _user()})
        )
        stopping = asyncio.Event()
        running = asyncio.create_task(link.run(stopping)) if broker else None
        if running is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.connected.wait(), CONNECT_WITHIN)
        try:
            yield services
        finally:
            await services.publishing.finish(CONNECT_WITHIN)
            stopping.set()
            if running is not None:
                await running
            services.credential_checks.close()
    finally:
        await journal.close()
