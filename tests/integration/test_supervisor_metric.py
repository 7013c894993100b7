"""`seriatim_supervisor_active`, the basis of the SeriatimNoActiveSupervisor alert: 1 in the
worker whose supervisor is active, 0 in a standby, and 1 in the standby once it takes over."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import System, free_port, running_system, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def bare(services: None, tmp_path: Path) -> Iterator[System]:
    """A gateway and no worker yet."""
    with running_system(tmp_path, workers=0) as running:
        yield running


def worker(system: System, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    return system.spawn(name, "worker", "--metrics-port", str(port)), port


def active(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    found = re.search(r"^seriatim_supervisor_active (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_the_active_supervisor_reports_1_and_a_standby_0_until_it_takes_over(
    bare: System,
) -> None:
    """Without the gauge (before issue 17) no scrape holds the line and the waits time out."""
    first, first_port = worker(bare, "worker-1")
    wait_for(lambda: active(first_port) == 1.0, 30, "the first worker's supervisor active")
    second, second_port = worker(bare, "worker-2")
    wait_for(lambda: active(second_port) is not None, 30, "the second worker's metrics")

    assert active(second_port) == 0.0
    assert active(first_port) == 1.0

    first.send_signal(signal.SIGTERM)  # it resigns: the standby takes over
    assert first.wait(timeout=60) == 0
    wait_for(lambda: active(second_port) == 1.0, 30, "the standby's supervisor active")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
