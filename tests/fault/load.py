"""Steady load for fault scenarios: clients post events at a fixed pace, retrying in place.

Each event carries an Idempotency-Key, and a request that fails (5xx, connection refused)
is retried with the same key until it gets a 202 or 200 — what a well-behaved webhook
sender does — so every event the load counts as accepted must be in the journal. With
`batch` above 1 each request is a `POST /v1/events/batch` of that many events, each item
with a key of its own, retried whole the same way. The
handler is `witnessed.sleep`, which reports every execution to the system's witness ledger;
the load keeps what the gateway answered per client, in posting order, to judge it against.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import time
from typing import Any

import httpx

from tests.harness import System


@dataclasses.dataclass
class Load:
    system: System
    clients: int = 10
    per_second: float = 20.0  # events per second in total, spread over the clients
    batch: int = 1  # events per request; above 1, through POST /v1/events/batch
    body: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"type": "witnessed.sleep", "payload": {"ms": 5}}
    )
    accepted: set[str] = dataclasses.field(default_factory=set)
    #: client id → the (seq, event id) of each 202/200, in posting order.
    answered: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    errors: int = 0
    missing_retry_after: int = 0  # 5xx answers without a Retry-After header
    #: How requests reach the gateway(s): httpx's own by default (tests/cluster balances).
    transport: httpx.AsyncBaseTransport | None = None
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _tokens: dict[str, str] | None = None  # client id -> its token, once prepared

    async def prepare(self) -> None:
        """Create the load's clients and sign them in, if not done yet: await it before
        starting the clock of a wait for the load to flow, since on a busy machine this takes
        a while (an argon2 hash and check per client). Off the event loop, four at a time."""
        if self._tokens is None:
            self._tokens = await asyncio.to_thread(self._sign_up)

    def _sign_up(self) -> dict[str, str]:
        def client(n: int) -> tuple[str, str]:
            created = self.system.admin_client(f"load-{n}")
            return str(created["client_id"]), self.system.token(created)

        if self.clients == 0:
            return {}
        first = client(0)  # the system's admin client is created (once) on the way
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return dict([first, *pool.map(client, range(1, self.clients))])

    async def run(self) -> None:
        """Post until stop() is called; each client posts its next event after the last one
        was accepted, so per-client acceptance order is the order of posting."""
        await self.prepare()
        assert self._tokens is not None
        tokens = self._tokens
        interval = self.clients * self.batch / self.per_second
        async with httpx.AsyncClient(
            base_url=self.system.base_url, timeout=10, transport=self.transport
        ) as http:
            await asyncio.gather(
                *(
                    self._client(http, token, cid, n, interval)
                    for n, (cid, token) in enumerate(tokens.items())
                )
            )

    def stop(self) -> None:
        self._stop.set()

    async def _client(
        self, http: httpx.AsyncClient, token: str, client_id: str, n: int, interval: float
    ) -> None:
        answers = self.answered.setdefault(client_id, [])
        sequence = 0
        await asyncio.sleep(interval * n / max(self.clients, 1))
        while not self._stop.is_set():
            sequence += 1
            answers.extend(await self._post_until_accepted(http, token, f"c{n}-e{sequence}"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _post_until_accepted(
        self, http: httpx.AsyncClient, token: str, key: str
    ) -> list[tuple[int, str]]:
        """Post until a 202 or 200; the seq and event id of each event it answered."""
        headers = {"Authorization": f"Bearer {token}"}
        if self.batch > 1:
            path = "/v1/events/batch"
            items = [{**self.body, "idempotency_key": f"{key}-{i}"} for i in range(self.batch)]
            body: dict[str, Any] = {"events": items}
        else:
            path, body = "/v1/events", self.body
            headers["Idempotency-Key"] = key
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = await http.post(path, json=body, headers=headers)
            except httpx.HTTPError:
                self.errors += 1
                await asyncio.sleep(0.2)
                continue
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if response.status_code in (200, 202):
                answer = response.json()
                events = answer["items"] if self.batch > 1 else [answer]
                self.accepted.update(event["id"] for event in events)
                return [(int(event["seq"]), str(event["id"])) for event in events]
            if response.status_code == 409:  # the first attempt is still in progress
                await asyncio.sleep(0.05)
                continue
            assert response.status_code >= 500, response.text  # never a 4xx for valid input
            if "retry-after" not in response.headers:
                self.missing_retry_after += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2")) / 4)
        raise AssertionError(f"event {key} was never accepted")
