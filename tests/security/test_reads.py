"""Bounded reads: a page of events is capped in bytes as well as by count, its cursor still
reaches every event once, and one tenant's reads are rate-limited apart from its writes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import System, assert_problem, running_system
from tests.security.conftest import Tenant

pytestmark = pytest.mark.integration

PAGE_MAX_BYTES = 512 * 1024
READ_BURST = 40


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {
        "SERIATIM_PAGE_MAX_BYTES": str(PAGE_MAX_BYTES),
        "SERIATIM_READ_RATE_PER_SECOND": "1",
        "SERIATIM_READ_RATE_BURST": str(READ_BURST),
    }
    with running_system(Path(tmp_path_factory.mktemp("reads")), workers=1, env=env) as running:
        yield running


def empties(count: int, tag: str) -> dict[str, Any]:
    """`{"tag": …, "items": [{}, {}, …]}`: the payload that costs most Python objects per
    byte."""
    return {"tag": tag, "items": [{}] * count}


def post_echoes(tenant: Tenant, payloads: list[Any]) -> None:
    """Post compact JSON (`{},` is 3 bytes; PostgreSQL's text of it, `{}, `, is 4)."""
    for payload in payloads:
        body = json.dumps({"type": "demo.echo", "payload": payload}, separators=(",", ":"))
        answer = tenant.http.post(
            "/v1/events", content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 202, answer.text
    tenant.journal()


def walk(tenant: Tenant, after_seq: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every page from `after_seq` on, following `next_after_seq`: (body bytes, body)."""
    while True:
        page = tenant.http.get("/v1/events", params={"limit": 1000, "after_seq": after_seq})
        assert page.status_code == 200, page.text
        body = page.json()
        yield len(page.content), body
        if body["next_after_seq"] is None:
            return
        assert body["next_after_seq"] == body["items"][-1]["seq"]
        after_seq = body["next_after_seq"]


def test_pages_of_large_events_stay_under_the_byte_cap_and_reach_every_event_once(
    reads: System,
) -> None:
    """Before: one page held all ten events (1.6 MB, over the cap), decoded into Python
    objects; now each page is at most SERIATIM_PAGE_MAX_BYTES and the cursor goes on."""
    # Given ten finished demo.echo events of about 80 KB of `{}`s each, and their results
    tenant = Tenant(reads, "big-reader")
    payloads = [empties(20_000, f"event-{n}-é") for n in range(10)]
    post_echoes(tenant, payloads)

    pages = list(walk(tenant))

    sizes = [size for size, _ in pages]
    assert all(size <= PAGE_MAX_BYTES for size in sizes), sizes
    assert len(pages) >= 4  # cut by bytes, not by the count of 1000
    items = [item for _, body in pages for item in body["items"]]
    assert [item["seq"] for item in items] == list(range(1, 11))
    assert [item["payload"] for item in items] == payloads
    assert [item["result"] for item in items] == payloads
    assert {item["status"] for item in items} == {"succeeded"}
    # The single event still carries both, equal to the page's
    one = tenant.http.get(f"/v1/events/{items[3]['id']}").json()
    assert [entry["attempt"] for entry in one.pop("attempt_log")] == [1]  # the single event's own
    assert one == items[3]
    tenant.http.close()


def test_an_event_larger_than_the_cap_is_alone_on_its_page_and_paging_goes_on(
    reads: System,
) -> None:
    """Before: the oversized event came on one page with every other event; now it comes
    alone, with a `next_after_seq` that leads to the rest."""
    # Given a small event, one whose payload and result together pass the cap (2 x 348 KB of
    # text, each from a body just under the 256 KiB limit), then another
    tenant = Tenant(reads, "huge-reader")
    post_echoes(tenant, [{"n": 1}, empties(87_000, "huge"), {"n": 3}])

    pages = [body for _, body in walk(tenant)]

    assert [[item["seq"] for item in body["items"]] for body in pages] == [[1], [2], [3]]
    assert pages[1]["items"][0]["payload"] == empties(87_000, "huge")
    tenant.http.close()


def test_a_read_flood_gets_429_while_the_tenants_writes_and_other_tenants_reads_go_on(
    reads: System,
) -> None:
    """Before: reads had no rate limit, every read of the flood was answered 200."""
    flooder, calm = Tenant(reads, "read-flooder"), Tenant(reads, "calm-reader")

    answers = [flooder.http.get("/v1/events", params={"limit": 1}) for _ in range(READ_BURST + 5)]

    codes = [answer.status_code for answer in answers]
    assert codes.count(200) <= READ_BURST + 2, codes
    assert 429 in codes
    refused = next(answer for answer in answers if answer.status_code == 429)
    problem = assert_problem(refused, 429)
    assert problem["type"] == "urn:seriatim:problem:rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    # Single events and the mailbox view are reads too
    assert flooder.http.get("/v1/mailbox").status_code == 429
    assert flooder.http.get(f"/v1/events/{uuid.uuid4()}").status_code == 429
    # Reads have a bucket of their own: the tenant's writes still go ahead
    posted = flooder.http.post("/v1/events", json={"type": "demo.echo", "payload": {}})
    assert posted.status_code == 202, posted.text
    # And other tenants still read
    assert calm.http.get("/v1/events").status_code == 200
    flooder.http.close()
    calm.http.close()


def test_reading_one_event_passes_its_stored_json_text_through(reads: System) -> None:
    """The payload and result come as PostgreSQL's text of the stored jsonb (`[{}, {}]`, with
    its spaces), spliced into the body, never decoded into Python objects. Before: decoded and
    encoded again, compact (`[{},{}]`)."""
    tenant = Tenant(reads, "one-read")
    post_echoes(tenant, [empties(1000, "one")])
    [row] = reads.sql(
        "SELECT id, payload::text AS payload, result::text AS result FROM events "
        "WHERE client_id = $1::uuid",
        tenant.id,
    )

    answer = tenant.http.get(f"/v1/events/{row['id']}")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert f'"payload":{row["payload"]},'.encode() in answer.content
    assert f'"result":{row["result"]},'.encode() in answer.content
    assert answer.json()["payload"] == empties(1000, "one")
    assert answer.json()["status"] == "succeeded"
    tenant.http.close()
