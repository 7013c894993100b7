"""A private RabbitMQ node for benchmark sessions on a machine whose shared broker is busy.

Starts a node of its own (the fault suite's RabbitNode: free ports, own data and cookie, the
installed RabbitMQ with default settings), prints the environment that points the benchmarks
at it, and holds it until interrupted (Ctrl-C or SIGTERM), then shuts it down and deletes it.

    .venv/bin/python bench/broker.py &      # prints SERIATIM_TEST_AMQP_URL=... and BENCH_...
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from rig import ROOT  # noqa: F401 - puts the project on sys.path

from tests.fault import nodes


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    bin_dir = nodes.rabbitmq_bin()
    if bin_dir is None:
        sys.exit("rabbitmq-server is not installed")
    node = nodes.RabbitNode(Path(tempfile.mkdtemp(prefix="seriatim-bench-")), bin_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        node.start()
        print(f"export SERIATIM_TEST_AMQP_URL='{node.url}'", flush=True)
        print(
            f"export BENCH_RABBITMQ_NODE='{node.name}' BENCH_RABBITMQ_HOME='{node.root}'",
            flush=True,
        )
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        node.remove()


if __name__ == "__main__":
    main()
