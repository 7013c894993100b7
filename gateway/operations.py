"""Operator actions, one function each, shared by the admin API and the console: each runs in
one transaction with its audit-log entry (actors/store/audit.py), and raises Problem (404,
409) when it cannot be done, leaving nothing changed and nothing audited."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import uuid
from collections.abc import Callable
from typing import Any

from actors import credentials
from actors.protocol import MailboxWanted
from actors.states import EventStatus
from actors.store.audit import AuditAction
from actors.store.console import ConsoleReads
from actors.store.console_sessions import ConsoleSessions, new_key
from actors.store.tenancy import SecretInfo, TooManySecrets
from gateway.accepting import AcceptedEvent
from gateway.problems import Problem
from gateway.services import Services
from gateway.signatures import new_secret
from gateway.tokens import new_signing_key

log = logging.getLogger(__name__)

STANDING = ("disabled", "admin")  # the changes of a client that can revoke its tokens
MAX_REASON = 500


def _no_client() -> Problem:
    return Problem(404, "not-found", "no such client")


async def create_client(
    services: Services, actor: uuid.UUID, name: str, admin: bool
) -> tuple[uuid.UUID, str]:
    """A new client: (id, secret); the secret is never stored in clear nor audited."""
    secret = credentials.new_secret()
    async with services.audit.record(actor, AuditAction.CLIENT_CREATE) as act:
        client_id = await services.journal.create_client(
            name, credentials.hash_secret(secret), admin, via=act.via
        )
        act.client_id, act.detail = client_id, {"name": name, "admin": admin}
    log.info("client %s created (admin=%s)", client_id, admin)
    return client_id, secret


async def change_client(
    services: Services, actor: uuid.UUID, client_id: uuid.UUID, changes: dict[str, Any]
) -> None:
    """Apply a client's PATCH (`disabled`, `admin`, `type_pointer`, `rate`, `max_backlog`,
    `max_stored_events`, `max_stored_bytes`)."""
    changes = dict(changes)
    standing = {name: changes.pop(name) for name in STANDING if name in changes}
    detail = {**standing, **{k: _plain(v) for k, v in changes.items()}}
    async with services.audit.record(
        actor, AuditAction.CLIENT_SETTINGS, client_id=client_id, detail=detail
    ) as act:
        found = await services.tenancy.set_standing(client_id, **standing, via=act.via)
        if found and changes:
            found = await services.tenancy.set_settings(client_id, **changes, via=act.via)
        if not found:
            raise _no_client()
    services.limits.forget(client_id)
    services.revocations.forget(client_id)
    log.info("client %s settings changed: %s", client_id, ", ".join(sorted(detail)))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


async def rotate_secret(services: Services, actor: uuid.UUID, client_id: uuid.UUID) -> str:
    """A new client secret (the old one and the client's tokens stop working)."""
    secret = credentials.new_secret()
    async with services.audit.record(
        actor, AuditAction.CLIENT_ROTATE_SECRET, client_id=client_id
    ) as act:
        if not await services.tenancy.set_secret(
            client_id, credentials.hash_secret(secret), via=act.via
        ):
            raise _no_client()
    services.revocations.forget(client_id)
    log.info("client %s secret rotated", client_id)
    return secret


async def delete_client(services: Services, actor: uuid.UUID, client_id: uuid.UUID) -> None:
    async with services.audit.record(actor, AuditAction.CLIENT_DELETE, client_id=client_id) as act:
        if await services.tenancy.delete_client(client_id, via=act.via) is None:
            raise _no_client()
    services.revocations.forget(client_id)
    services.limits.forget(client_id)
    log.info("client %s deleted", client_id)


async def add_webhook_secret(
    services: Services, actor: uuid.UUID, client_id: uuid.UUID, grace: float
) -> tuple[SecretInfo, str]:
    """A new webhook secret (stored, and its text `whsec_...` returned once). Problem 409,
    nothing stored, when the client would have more than SERIATIM_MAX_WEBHOOK_SECRETS valid
    secrets."""
    text, key = new_secret()
    cap = services.settings.max_webhook_secrets
    async with services.audit.record(
        actor, AuditAction.WEBHOOK_SECRET_CREATE, client_id=client_id
    ) as act:
        try:
            stored = await services.tenancy.add_webhook_secret(
                client_id, key, grace, cap=cap, via=act.via
            )
        except TooManySecrets as full:
            raise Problem(
                409,
                "too-many-webhook-secrets",
                f"the client has {full.valid} valid webhook secrets and may have {cap} "
                "(SERIATIM_MAX_WEBHOOK_SECRETS); add one with previous_valid_for 0, which "
                "retires the others, or wait until older ones expire",
            ) from None
        if stored is None:
            raise _no_client()
        act.detail = {"id": str(stored.id), "previous_valid_for": grace}
    log.info("webhook secret %s added for client %s", stored.id, client_id)
    return stored, text


async def resume_mailbox(services: Services, actor: uuid.UUID, client_id: uuid.UUID) -> None:
    async with services.audit.record(actor, AuditAction.MAILBOX_RESUME, client_id=client_id) as act:
        if not await services.journal.resume_mailbox(client_id, via=act.via):
            if await services.journal.mailbox(client_id) is None:
                raise Problem(404, "not-found", "no such mailbox")
            raise Problem(409, "mailbox-not-suspended", "the mailbox is not suspended")
    log.info("mailbox %s resumed", client_id)
    await services.link.tell_supervisor(MailboxWanted(client_id))  # else the sweep sees it


async def suspend_mailbox(
    services: Services, actor: uuid.UUID, client_id: uuid.UUID, reason: str
) -> None:
    """Suspend a mailbox by hand: its owner loses it (a new epoch) and nothing more runs until
    it is resumed."""
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise Problem(422, "invalid-reason", f"a reason of 1-{MAX_REASON} characters is needed")
    async with services.audit.record(
        actor, AuditAction.MAILBOX_SUSPEND, client_id=client_id, detail={"reason": reason}
    ) as act:
        if not await services.journal.suspend_mailbox(
            client_id, f"operator: {reason}", via=act.via
        ):
            if await services.journal.mailbox(client_id) is None:
                raise Problem(404, "not-found", "no such mailbox")
            raise Problem(409, "mailbox-suspended", "the mailbox is suspended already")
    log.info("mailbox %s suspended by an operator", client_id)


async def set_policy(
    services: Services, actor: uuid.UUID, client_id: uuid.UUID, changes: dict[str, Any]
) -> None:
    """The mailbox's dead-event policy and restart intensity (intake.policy_body's changes)."""
    async with services.audit.record(
        actor, AuditAction.MAILBOX_POLICY, client_id=client_id, detail=changes
    ) as act:
        if not await services.journal.set_mailbox_policy(client_id, **changes, via=act.via):
            raise Problem(404, "not-found", "no such mailbox")
    log.info("mailbox %s policy changed: %s", client_id, sorted(changes))


#: The idempotency key of a redrive by filter: a tab cannot be in a client's own keys.
REDRIVE_KEY = "redrive\t{event_id}"


async def redrive(
    services: Services,
    actor: uuid.UUID,
    client_id: uuid.UUID,
    event_id: uuid.UUID,
    *,
    once: bool = False,
) -> AcceptedEvent:
    """Queue a dead event again as a new event at the tail of its client's mailbox. The accept
    goes through the group commit, so its entry is written just after it, not with it.
    `once`: under the key REDRIVE_KEY, so a second such redrive of the same event (a double
    click, two operators' filters at once) returns the first one's event (`replayed`)."""
    row = await services.journal.event(client_id, event_id)
    if row is None:
        raise Problem(404, "not-found", "no such event")
    if row.status is not EventStatus.DEAD:
        raise Problem(
            409, "event-not-dead", f"only dead events can be redriven; this one is {row.status}"
        )
    key = REDRIVE_KEY.format(event_id=row.id) if once else None
    accepted = await services.acceptor.accept(
        client_id, row.type, row.payload, key=key, redrive_of=row.id
    )
    if accepted.replayed:
        return accepted  # redriven already, and audited then
    await services.audit.write(
        actor,
        AuditAction.EVENT_REDRIVE,
        client_id=client_id,
        event_id=event_id,
        detail={"new_event_id": str(accepted.event.id), "new_seq": accepted.event.seq},
    )
    return accepted


MAX_REDRIVE = 10_000  # dead events one redrive by filter takes at most


@dataclasses.dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which dead events a redrive by filter takes: one client's or all, died in a window."""

    client_id: uuid.UUID | None = None
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None


async def dead_matching(services: Services, which: DeadFilter) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """The preview of a redrive by filter: (client, event) pairs, in `seq` order per client;
    dead events already redriven are left out, so a redrive by filter can be run again."""
    return await ConsoleReads(services.journal.pool).dead_events(
        client_id=which.client_id, since=which.since, until=which.until, limit=MAX_REDRIVE
    )


async def redrive_matching(
    services: Services,
    actor: uuid.UUID,
    events: list[tuple[uuid.UUID, uuid.UUID]],
    progress: Callable[[int], None] = lambda done: None,
) -> int:
    """Redrive each of `events` (from `dead_matching`) in the order given, so each client's go
    to its tail in `seq` order; `progress(done)` after each. Each is redriven at most once
    however many jobs or clicks ask for it (`redrive(once=True)`); one gone meanwhile (404)
    is passed over. A client whose redrive is refused (disabled, backlog full, over its
    quota or rate) keeps the rest of its events dead, so its order holds; the other clients
    go on. Returns how many were redriven by this call."""
    done = 0
    refused_clients: set[uuid.UUID] = set()
    for client_id, event_id in events:
        if client_id not in refused_clients:
            try:
                accepted = await redrive(services, actor, client_id, event_id, once=True)
            except Problem as refused:
                if refused.status >= 500:
                    raise
                if refused.status != 404:
                    refused_clients.add(client_id)
                    log.info("redrive of client %s stopped: %s", client_id, refused.detail)
            else:
                done += 0 if accepted.replayed else 1
        progress(done)
    return done


async def rotate_signing_key(services: Services, actor: uuid.UUID) -> str:
    """A new signing key signs from now on; its kid."""
    kid, private = new_signing_key()
    async with services.audit.record(
        actor, AuditAction.SIGNING_KEY_ROTATE, detail={"kid": kid}
    ) as act:
        await services.journal.add_signing_key(kid, private, via=act.via)
    await services.keys.refresh(now=True)
    log.info("signing key rotated: new kid %s", kid)
    return kid


async def rotate_console_key(services: Services, actor: uuid.UUID) -> dict[str, Any]:
    """A new key signs console sessions from now on; older keys verify their sessions until
    those expire, then go. The new kid and how many old keys went."""
    kid, key = new_key()
    async with services.audit.record(
        actor, AuditAction.CONSOLE_KEY_ROTATE, detail={"kid": kid}
    ) as act:
        dropped = await ConsoleSessions(services.journal.pool).rotate_key(kid, key, via=act.via)
    log.info("console signing key rotated: new kid %s", kid)
    return {"kid": kid, "dropped": dropped}


async def revoke_signing_key(services: Services, actor: uuid.UUID, kid: str) -> str:
    """Revoke the key `kid`; a new key (its kid returned) signs from now on."""
    successor = new_signing_key()
    async with services.audit.record(
        actor, AuditAction.SIGNING_KEY_REVOKE, detail={"revoked": kid, "kid": successor[0]}
    ) as act:
        if not await services.journal.revoke_signing_key(kid, successor, via=act.via):
            raise Problem(404, "not-found", "no such signing key, or it is revoked already")
    await services.keys.refresh(now=True)
    log.info("signing key %s revoked: new kid %s", kid, successor[0])
    return successor[0]
