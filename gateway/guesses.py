"""Client-secret checks of `POST /v1/token`, kept from crowding out tenants: each argon2 check
(~37 ms of CPU) runs on a small pool of its own with a bounded queue, and checks are
rate-limited per peer address (every check) and per client id (failed checks), so that
wrong-secret floods cost a bounded share of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from actors.credentials import verify_secret
from actors.settings import Settings
from gateway.limits import Rate, RateLimiter, rate_limited
from gateway.problems import Problem

QUEUE_PER_THREAD = 8  # checks that may wait for each thread of the pool; more get a 503


def burst_of(per_second: float) -> int:
    """The burst allowed at a guess rate: two seconds' worth, at least one."""
    return max(1, math.ceil(2 * per_second))


class CredentialChecks:
    """The pool and the limits of client-secret checks. Built in the lifespan; `close()` it."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        threads = settings.credential_checks
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="credential-check")
        self._room = threads * (1 + QUEUE_PER_THREAD)
        self._taken = 0
        self._limiter = RateLimiter(clock)
        self._per_peer = Rate(settings.token_rate_per_peer, burst_of(settings.token_rate_per_peer))
        self._per_client = Rate(
            settings.token_rate_per_client, burst_of(settings.token_rate_per_client)
        )

    def admit(self, peer: str, client_id: uuid.UUID | None) -> None:
        """Count one check from `peer`; raises Problem 429 when the peer is over its rate, or
        when `client_id` (None: not a client id) has failed too many checks lately."""
        wait = self._limiter.wait(("peer", peer), self._per_peer)
        if wait > 0:
            raise rate_limited(
                f"this address may make {self._per_peer.per_second:g} credential checks per "
                "second; retry later",
                wait,
            )
        wait = self._limiter.wait(("client", client_id), self._per_client, count=False)
        if wait > 0:
            raise rate_limited(
                f"this client id may fail {self._per_client.per_second:g} credential checks "
                "per second; retry later",
                wait,
            )

    def failed(self, client_id: uuid.UUID | None) -> None:
        """Count a failed check against `client_id`'s rate."""
        self._limiter.wait(("client", client_id), self._per_client)

    @contextlib.contextmanager
    def reserved(self) -> Iterator[None]:
        """A place on the pool for one check; Problem 503 when every place is taken."""
        if self._taken >= self._room:
            raise Problem(
                503,
                "overloaded",
                "the gateway is checking as many client secrets as it may; retry shortly",
                headers={"Retry-After": "1"},
            )
        self._taken += 1
        try:
            yield
        finally:
            self._taken -= 1

    async def verify(self, secret_hash: str | None, secret: str) -> bool:
        """`verify_secret` on the pool: an unknown client (None) costs the same time."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, verify_secret, secret_hash, secret)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
