"""Steady load for fault scenarios: clients post events at a fixed pace, retrying in place.

Each event carries an Idempotency-Key, and a request that fails (5xx, connection refused)
is retried with the same key until it gets a 202 or 200 — what a well-behaved webhook
sender does — so every event the load counts as accepted must be in the journal.
"""

from __future__ import annotations

import asyncio
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
    body: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"type": "demo.sleep", "payload": {"ms": 5}}
    )
    accepted: set[str] = dataclasses.field(default_factory=set)
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    errors: int = 0
    missing_retry_after: int = 0  # 5xx answers without a Retry-After header
    _stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Post until stop() is called; each client posts its next event after the last one
        was accepted, so per-client acceptance order is the order of posting."""
        tokens = [
            self.system.token(self.system.admin_client(f"load-{n}")) for n in range(self.clients)
        ]
        interval = self.clients / self.per_second
        async with httpx.AsyncClient(base_url=self.system.base_url, timeout=10) as http:
            await asyncio.gather(
                *(self._client(http, token, n, interval) for n, token in enumerate(tokens))
            )

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, http: httpx.AsyncClient, token: str, n: int, interval: float) -> None:
        sequence = 0
        await asyncio.sleep(interval * n / max(self.clients, 1))
        while not self._stop.is_set():
            sequence += 1
            await self._post_until_accepted(http, token, f"c{n}-e{sequence}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _post_until_accepted(self, http: httpx.AsyncClient, token: str, key: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = await http.post("/v1/events", json=self.body, headers=headers)
            except httpx.HTTPError:
                self.errors += 1
                await asyncio.sleep(0.2)
                continue
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if response.status_code in (200, 202):
                self.accepted.add(response.json()["id"])
                return
            if response.status_code == 409:  # the first attempt is still in progress
                await asyncio.sleep(0.05)
                continue
            assert response.status_code >= 500, response.text  # never a 4xx for valid input
            if "retry-after" not in response.headers:
                self.missing_retry_after += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2")) / 4)
        raise AssertionError(f"event {key} was never accepted")
