"""Per-client limits: a GCRA rate limit (per client, or per any key such as a peer's address),
the backlog cap's and the quota's settings."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Hashable

from actors.settings import Settings
from gateway.client_reads import ClientReads
from gateway.problems import Problem

SETTINGS_TTL = 5.0  # seconds a gateway keeps a client's limits before reading them again
_PRUNE_AT = 100_000  # clients tracked before idle ones are forgotten


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int


class RateLimiter:
    """GCRA (the generic cell rate algorithm): one float per client, O(1) per request.

    A request conforms when the client's theoretical arrival time (TAT) is at most
    `(burst - 1) / per_second` ahead of now; it then moves the TAT by `1 / per_second`.
    Per gateway process: N gateways allow up to N times the rate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[Hashable, float] = {}

    def wait(self, key: Hashable, rate: Rate, *, count: bool = True, cost: int = 1) -> float:
        """0 when `cost` cells (a request, or a batch's events) may go ahead (and are counted,
        unless `count` is false), else the seconds to wait. A cost over the burst never
        conforms: the caller refuses it outright."""
        now = self._clock()
        interval = 1.0 / rate.per_second
        tat = max(self._tat.get(key, now), now)
        ahead = tat - now - interval * (rate.burst - cost)
        if ahead > 0 or not count:
            return max(ahead, 0.0)
        self._tat[key] = tat + interval * cost
        if len(self._tat) > _PRUNE_AT:
            self._tat = {cid: t for cid, t in self._tat.items() if t > now}
        return 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    rate: Rate
    max_backlog: int
    max_stored_events: int
    max_stored_bytes: int


class ClientLimits:
    """Each client's limits, read from the journal at most every SETTINGS_TTL seconds (the
    gateway's ClientReads: one read with the token check's, grouped across requests)."""

    def __init__(self, settings: Settings, reads: ClientReads) -> None:
        self._defaults = settings
        self._clients = reads
        self.limiter = RateLimiter()
        self._reads = RateLimiter()
        self._read_rate = Rate(settings.read_rate_per_second, settings.read_rate_burst)

    async def of(self, client_id: uuid.UUID) -> Limits:
        row = await self._clients.row(client_id, SETTINGS_TTL)
        d = self._defaults
        return Limits(
            Rate(
                (row and row.rate_per_second) or d.rate_per_second,
                (row and row.rate_burst) or d.rate_burst,
            ),
            (row and row.max_backlog) or d.max_backlog,
            (row and row.max_stored_events) or d.max_stored_events,
            (row and row.max_stored_bytes) or d.max_stored_bytes,
        )

    def forget(self, client_id: uuid.UUID) -> None:
        """Read this client's limits again on its next request (after an admin change)."""
        self._clients.forget(client_id)

    async def admit(self, client_id: uuid.UUID, *, events: int = 1, count: bool = True) -> Limits:
        """The client's limits once `events` events are counted against its rate (only
        checked, not counted, when `count` is false); raises Problem 429 when it is over its
        rate, 422 when `events` is more than its burst (it would never conform)."""
        limits = await self.of(client_id)
        if events > limits.rate.burst:
            raise Problem(
                422,
                "batch-over-burst",
                f"a batch of {events} events is more than this client's rate limit lets "
                f"through at once (bursts of {limits.rate.burst}); send smaller batches",
            )
        wait = self.limiter.wait(client_id, limits.rate, count=count, cost=events)
        if wait > 0:
            raise rate_limited(
                f"this client may send {limits.rate.per_second:g} events per second "
                f"(bursts of {limits.rate.burst}); retry later",
                wait,
            )
        return limits

    def admit_read(self, client_id: uuid.UUID) -> None:
        """Count one read of this client (a bucket of its own, apart from its writes); raises
        Problem 429 when it is over the deployment's read rate."""
        rate = self._read_rate
        wait = self._reads.wait(client_id, rate)
        if wait > 0:
            raise rate_limited(
                f"this client may read {rate.per_second:g} times per second "
                f"(bursts of {rate.burst}); retry later",
                wait,
            )


def rate_limited(detail: str, wait: float) -> Problem:
    """A 429 whose Retry-After is `wait` seconds, rounded up (at least 1)."""
    return Problem(
        429, "rate-limited", detail, headers={"Retry-After": str(max(1, math.ceil(wait)))}
    )


def backlog_full(backlog: int, events: int = 1) -> Problem:
    room = "as many as it may have" if events == 1 else f"too many to take {events} more"
    return Problem(
        429,
        "backlog-full",
        f"this client has {backlog} events accepted and not yet finished, {room}; "
        "retry once some have finished",
        headers={"Retry-After": "5"},
    )


def quota_full(settings: Settings) -> Problem:
    """The 429 of an accept that would take the client past its quota of stored events. With
    retention on, room comes back as finished events age out: Retry-After is the deleter's
    interval; with it off only an operator can make room, and no Retry-After is given."""
    headers = {}
    if settings.retention:
        headers["Retry-After"] = str(max(1, math.ceil(settings.retention_interval)))
    return Problem(
        429,
        "quota-exceeded",
        "this client has stored as many events (or bytes of them) as its quota allows; "
        "finished events are deleted after the deployment's retention period",
        headers=headers,
    )
