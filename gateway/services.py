"""The gateway's process-wide collaborators, built once in the lifespan and reached by routes
as `request.state.services`."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from actors.broker import BrokerLink
from actors.handlers import HandlerRegistry
from actors.policy import RestartIntensity
from actors.settings import Settings
from actors.store import Journal, Tenancy
from actors.store.audit import AuditLog
from gateway.accepting import Acceptor
from gateway.client_reads import ClientReads
from gateway.guesses import CredentialChecks
from gateway.limits import ClientLimits
from gateway.publishing import MARK_DELAY, WANT_AGAIN_AFTER, Publishing
from gateway.revocations import Revocations
from gateway.tokens import KeyRefresh, TokenService


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything a request handler needs; no behaviour of its own."""

    settings: Settings
    journal: Journal
    tokens: TokenService
    keys: KeyRefresh
    handlers: HandlerRegistry
    link: BrokerLink
    publishing: Publishing
    acceptor: Acceptor
    tenancy: Tenancy
    audit: AuditLog
    limits: ClientLimits
    credential_checks: CredentialChecks
    revocations: Revocations
    intensity: RestartIntensity

    @classmethod
    def create(
        cls,
        settings: Settings,
        journal: Journal,
        tokens: TokenService,
        handlers: HandlerRegistry,
        link: BrokerLink,
    ) -> Services:
        tenancy = Tenancy(journal.pool)
        reads = ClientReads(tenancy)
        limits = ClientLimits(settings, reads)
        publishing = Publishing(
            link,
            journal,
            want_again_after=min(WANT_AGAIN_AFTER, settings.idle_timeout / 2),
            # a mark is due within 1.5 delays of its confirm: well before the relay looks
            mark_delay=min(MARK_DELAY, settings.relay_after / 4),
        )
        return cls(
            settings=settings,
            journal=journal,
            tokens=tokens,
            keys=KeyRefresh(settings, journal, tokens),
            handlers=handlers,
            link=link,
            publishing=publishing,
            acceptor=Acceptor(journal, limits, publishing, settings),
            tenancy=tenancy,
            audit=AuditLog(journal.pool),
            limits=limits,
            credential_checks=CredentialChecks(settings),
            revocations=Revocations(settings, reads),
            intensity=RestartIntensity(settings.restart_intensity, settings.restart_period),
        )


def services_of(request: Request) -> Services:
    """The services of the application serving `request`."""
    services: Services = request.state.services
    return services
