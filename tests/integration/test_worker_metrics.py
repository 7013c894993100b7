"""A worker started with --metrics-port serves its Prometheus metrics."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.harness import System, free_port, wait_for

pytestmark = pytest.mark.integration


def test_a_worker_serves_prometheus_metrics_on_its_metrics_port(system: System) -> None:
    # Given a third worker started with --metrics-port
    port = free_port()
    worker = system.spawn("worker-metrics", "worker", "--metrics-port", str(port))
    try:
        # When Prometheus scrapes it
        def scrape() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except httpx.HTTPError:
                return None

        response = wait_for(scrape, 30, "the worker's metrics endpoint")

        # Then it answers in the text format with seriatim's metrics, and 404 elsewhere
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'seriatim_events_processed_total{outcome="succeeded"}' in response.text
        assert "seriatim_mailboxes_active" in response.text
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=2).status_code == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=40) == 0
