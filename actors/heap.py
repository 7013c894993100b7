"""The garbage collector in long-running processes: what start-up made is frozen.

A full collection scans every tracked object; in a gateway or worker most of them (modules,
handlers, the tracer, pools) are made at start-up and live for ever, and scanning them stalled
the gateway's event loop for ~30 ms at a time (docs/benchmarks.md). Frozen, they are never
scanned again; what serving allocates is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Call once the process is set up and about to serve."""
    gc.collect()
    gc.freeze()
