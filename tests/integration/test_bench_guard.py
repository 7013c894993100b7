"""Issue 14, item 4: a benchmark that opens hundreds of AMQP connections never runs on a broker
whose file-descriptor limit cannot take them. bench/peer.py pointed at the shared broker (soft
limit 1,024) refuses before it opens anything, naming the limit; without the flag it starts a
private node of its own (bench/guard.py).

On the code before the guard, `--shared-broker` did not exist (argparse exit 2, no limit named)
and peer.py ran its ~800 connections against the shared broker: these tests fail there, and the
first is not run against the old code on purpose (it is what took the shared broker down)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import harness

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import guard  # noqa: E402


def test_peer_on_the_shared_broker_refuses_naming_the_limit(services: None) -> None:
    limit = guard.read_sockets(harness.AMQP_URL)
    env = {**os.environ, "SERIATIM_TEST_AMQP_URL": harness.AMQP_URL}
    env.pop(guard.PRIVATE_ENV, None)
    env.pop("BENCH_RABBITMQ_NODE", None)

    run = subprocess.run(
        [sys.executable, str(BENCH / "peer.py"), "--shared-broker", "--queues", "200"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )

    assert run.returncode != 0, run.stdout
    assert "refusing to run" in run.stderr, run.stderr
    assert "file-descriptor limit" in run.stderr
    assert f"{limit.limit} sockets" in run.stderr
    assert f"about {2 * (os.cpu_count() or 1) * 200 + 20} AMQP connections" in run.stderr
    assert "dramatiq" not in run.stdout.lower()  # nothing was run


def test_the_check_refuses_more_than_half_of_the_sockets_left() -> None:
    sockets = guard.Sockets(limit=832, used=32, source="test")

    guard.check(sockets, 400, "amqp://guest:guest@127.0.0.1:5672/%2F")  # half of 800: fits
    with pytest.raises(guard.BrokerTooSmall, match="832 sockets"):
        guard.check(sockets, 401, "amqp://guest:guest@127.0.0.1:5672/%2F")


def test_the_refusal_does_not_show_the_password() -> None:
    with pytest.raises(guard.BrokerTooSmall) as refused:
        guard.check(guard.Sockets(100, 0, "test"), 800, "amqp://bench:s3cret@10.0.0.1:5672/%2F")

    assert "s3cret" not in str(refused.value)
    assert "10.0.0.1:5672" in str(refused.value)
