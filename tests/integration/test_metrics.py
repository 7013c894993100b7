"""Metrics endpoints: the gateway's labels, and one endpoint for every process of
`seriatim up`."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import harness
from tests.harness import System, free_port, wait_for

pytestmark = pytest.mark.integration


def test_gateway_metrics_use_route_templates_and_name_rejections(system: System) -> None:
    # Given an accepted event, a read of it and a refused submission
    token = system.token(system.admin_client("metrics"))
    headers = {"Authorization": f"Bearer {token}"}
    accepted = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": "demo.echo", "payload": {}},
        headers=headers,
        timeout=10,
    )
    assert accepted.status_code == 202
    event_id = accepted.json()["id"]
    assert httpx.get(f"{system.base_url}/v1/events/{event_id}", headers=headers).status_code == 200
    refused = httpx.post(f"{system.base_url}/v1/events", content=b"{}", headers=headers, timeout=10)
    assert refused.status_code == 415

    # When Prometheus scrapes the gateway
    text = httpx.get(f"{system.base_url}/metrics", timeout=10).text

    # Then requests are counted by route template, never by raw path or id
    assert (
        'seriatim_http_requests_total{method="GET",route="/v1/events/{event_id}",'
        'status_class="2xx"}' in text
    )
    assert event_id not in text
    assert "seriatim_backlog_events" not in text  # journal-wide figures come from workers
    assert accepted.json()["client_id"] not in text
    assert re.search(r"^seriatim_events_accepted_total [1-9]", text, re.MULTILINE)
    assert re.search(
        r'^seriatim_events_rejected_total\{reason="unsupported_media_type"\} [1-9]',
        text,
        re.MULTILINE,
    )


@pytest.fixture(scope="module")
def exemplary(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A gateway (no workers) with SERIATIM_METRICS_EXEMPLARS=on (off by default)."""
    env = {"SERIATIM_METRICS_EXEMPLARS": "on"}
    with harness.running_system(tmp_path_factory.mktemp("ex"), workers=0, env=env) as running:
        yield running


def test_the_gateway_answers_openmetrics_with_exemplars_when_asked(exemplary: System) -> None:
    system = exemplary
    token = system.token(system.admin_client("exemplars"))
    response = httpx.get(
        f"{system.base_url}/v1/mailbox", headers={"Authorization": f"Bearer {token}"}
    )
    trace_id = response.headers["trace-id"]

    scraped = httpx.get(
        f"{system.base_url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )

    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    assert scraped.text.endswith("# EOF\n")
    assert re.search(
        r'^seriatim_http_request_duration_seconds_bucket\{[^}]*route="/v1/mailbox"[^}]*\} '
        r'\S+ # \{trace_id="[0-9a-f]{32}"\}',
        scraped.text,
        re.MULTILINE,
    ), trace_id


def test_seriatim_up_serves_every_process_on_one_metrics_endpoint(
    services: None, tmp_path: Path
) -> None:
    # Given `seriatim up --workers 2 --metrics-port P`
    database = harness.create_database()
    system = System(tmp_path, database, harness.new_namespace(), workers=0)
    port = free_port()
    try:
        up = system.spawn("up", "up", "--workers", "2", "--metrics-port", str(port))
        wait_for(system.ready, 60, "the gateway started by seriatim up")
        wait_for(lambda: system.live_workers() >= 2, 60, "two workers to register")

        # When that one endpoint is scraped
        def every_process() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            labels = set(re.findall(r'process="([^"]+)"', text))
            return text if labels >= {"gateway", "worker-1", "worker-2"} else None

        text = wait_for(every_process, 60, "metrics of the gateway and both workers")

        # Then it holds each process's metrics, told apart by the process label
        for process in ("gateway", "worker-1", "worker-2"):
            assert f'seriatim_broker_connected{{process="{process}"}} 1.0' in text
        assert 'seriatim_mailboxes_active{process="worker-1"}' in text
        assert text.count("# TYPE seriatim_attempts_total counter") == 1
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        system.stop()
        harness.delete_namespace(system.namespace, database)
        harness.drop_database(database)
