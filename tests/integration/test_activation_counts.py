"""Issue 14, item 1: what the gateway pays per new client, counted (not timed) with the
journal's statement counter (`seriatim_journal_statements`, by query) on a real gateway.

Before, a new client's first request read its row twice, one round trip each: its standing for
the token check (`client_standing`) and its limits (`client_settings`), and so did every request
of a client whose reads were older than 5 s (1,000 clients x 4 events: 2 statements per event).
Now one read serves both, and the reads of requests waiting at the same moment go as one
statement (`clients_intake`). Red on the starting code (it had neither the counter nor
`clients_intake`); with the counter and the old reads it would count 40 `client_standing` and
40 `client_settings` statements (bench/activation.py measured 1.0 of each per event)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.harness import System

pytestmark = pytest.mark.integration

CLIENTS = 40


def statements(system: System) -> dict[str, float]:
    text = httpx.get(f"{system.base_url}/metrics", timeout=10).text
    pattern = re.compile(r'^seriatim_journal_statements_total\{query="([^"]+)"\} (\S+)$', re.M)
    return {name: float(value) for name, value in pattern.findall(text)}


async def post_one_each(system: System, tokens: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=system.base_url, timeout=60) as http:
        answers = await asyncio.gather(
            *(
                http.post(
                    "/v1/events",
                    json={"type": "demo.echo", "payload": {}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                for token in tokens
            )
        )
    return [answer.status_code for answer in answers]


def test_a_new_clients_first_event_reads_its_row_once_for_token_and_limits(
    system: System,
) -> None:
    tokens = [system.token(system.create_client(f"count-{n}")) for n in range(CLIENTS)]
    before = statements(system)

    statuses = asyncio.run(post_one_each(system, tokens))

    after = statements(system)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert statuses == [202] * CLIENTS
    assert delta.get("client_standing", 0) == 0, delta
    assert delta.get("client_settings", 0) == 0, delta
    assert 1 <= delta["clients_intake"] <= CLIENTS, delta
