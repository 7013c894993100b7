"""Keep benchmarks that open hundreds of AMQP connections off a broker they could harm.

A RabbitMQ node refuses connections past its file-descriptor (socket) limit and, near it, its
vhosts can crash past their restart intensity (issue 14: `bench/peer.py` against the shared
broker, soft limit 1,024, took every client down until the app was restarted by hand). So such
a benchmark either runs on a private node it starts itself (the default: the same node as
`bench/broker.py`, with the file-descriptor soft limit raised to the hard limit), or, pointed at
a broker, first reads that node's socket limit and refuses, naming the limit, when the
connections it is about to open would take more than half of what is left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from rig import ROOT  # noqa: F401 - puts the project on sys.path

from tests.fault import nodes

#: Of the sockets a node has left, the share a benchmark may take: the rest is for the
#: broker's other clients (the shared broker serves four other sessions' tests).
SHARE = 0.5
#: Set in the re-run under a private node, so that it does not start another one.
PRIVATE_ENV = "BENCH_PRIVATE_BROKER"


class Sockets(NamedTuple):
    """A RabbitMQ node's socket (connection) limit and what is in use, and how it was read."""

    limit: int
    used: int
    source: str


class BrokerTooSmall(SystemExit):
    """The broker cannot take the benchmark's connections safely; the message says why."""


def check(sockets: Sockets, connections: int, url: str) -> None:
    """Raise BrokerTooSmall unless `connections` fit in SHARE of the sockets left."""
    room = int((sockets.limit - sockets.used) * SHARE)
    if connections > room:
        raise BrokerTooSmall(
            f"refusing to run: this benchmark opens about {connections} AMQP connections, and "
            f"the RabbitMQ node at {_redact(url)} has a file-descriptor limit allowing "
            f"{sockets.limit} sockets ({sockets.used} in use; {sockets.source}). Past that "
            "limit the node refuses connections and can crash its vhost for every client. "
            "Run without --shared-broker to use a private node, or start one with bench/broker.py, "
            "or raise the node's file-descriptor limit (ulimit -n / LimitNOFILE)."
        )


def read_sockets(url: str) -> Sockets:
    """The node's socket limit: from the management API when it answers, else from
    `rabbitmq-diagnostics status` (of bench/broker.py's node when BENCH_RABBITMQ_NODE names
    it). Raises BrokerTooSmall when neither answers: an unknown limit is not a safe one."""
    found = _from_management(url) or _from_diagnostics()
    if found is None:
        raise BrokerTooSmall(
            f"refusing to run: could not read the file-descriptor limit of the RabbitMQ node "
            f"at {_redact(url)} (no management API on port 15672, no rabbitmq-diagnostics "
            "answer); run without --shared-broker to use a private node"
        )
    return found


def _from_management(url: str) -> Sockets | None:
    parts = urlsplit(url)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    request = urllib.request.Request(f"http://{parts.hostname or '127.0.0.1'}:15672/api/nodes")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            nodes_ = json.load(answer)
        node = nodes_[0]
        return Sockets(int(node["sockets_total"]), int(node["sockets_used"]), "management API")
    except (OSError, ValueError, LookupError, TypeError):
        return None


def _from_diagnostics() -> Sockets | None:
    node = os.environ.get("BENCH_RABBITMQ_NODE")
    env = {**os.environ, "HOME": os.environ.get("BENCH_RABBITMQ_HOME", os.environ["HOME"])}
    program = shutil.which("rabbitmq-diagnostics")
    if node:
        bin_dir = nodes.rabbitmq_bin()
        program = str(bin_dir / "rabbitmq-diagnostics") if bin_dir else None
    if program is None:
        return None
    command = [program, "-q", *(["-n", node] if node else []), "status", "--formatter", "json"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, env=env, check=True
        )
        descriptors = json.loads(done.stdout)["file_descriptors"]
        return Sockets(
            int(descriptors["sockets_limit"]),
            int(descriptors["sockets_used"]),
            "rabbitmq-diagnostics status",
        )
    except (OSError, ValueError, LookupError, TypeError, subprocess.SubprocessError):
        return None


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


@contextlib.contextmanager
def private_node() -> Iterator[nodes.RabbitNode]:
    """A private node (as bench/broker.py starts), its descriptor limit raised to the hard
    limit first (the node inherits it); shut down and deleted on exit."""
    bin_dir = nodes.rabbitmq_bin()
    if bin_dir is None:
        sys.exit("rabbitmq-server is not installed: a private node cannot be started")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    node = nodes.RabbitNode(Path(tempfile.mkdtemp(prefix="seriatim-bench-")), bin_dir)
    try:
        node.start()
        yield node
    finally:
        node.remove()


def on_a_safe_broker(shared: bool, connections: int, argv: Sequence[str]) -> bool:
    """Make sure the benchmark runs where its `connections` do no harm.

    With `shared`, it runs on the broker SERIATIM_TEST_AMQP_URL names (the shared one by
    default): that node's socket limit is checked first and a limit too low is refused
    (SystemExit naming it); returns False: run here. Otherwise this script (`argv`) is run
    again on a private node started for it, then the node is removed; returns True: the
    caller exits (with the re-run's status when it failed)."""
    if shared or os.environ.get(PRIVATE_ENV) or os.environ.get("BENCH_RABBITMQ_NODE"):
        url = _env_url()
        check(read_sockets(url), connections, url)
        return False
    with private_node() as node:
        env = {
            **os.environ,
            "SERIATIM_TEST_AMQP_URL": node.url,
            "BENCH_RABBITMQ_NODE": node.name,
            "BENCH_RABBITMQ_HOME": str(node.root),
            PRIVATE_ENV: "1",
        }
        print(f"on a private RabbitMQ node {node.name} ({node.url})", flush=True)
        done = subprocess.run([sys.executable, *argv], env=env, check=False)
    if done.returncode:
        sys.exit(done.returncode)
    return True


def _env_url() -> str:
    return os.environ.get("SERIATIM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
