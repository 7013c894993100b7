"""Placement: which live worker process takes the next mailbox."""

from __future__ import annotations

from collections.abc import Mapping


def least_loaded(loads: Mapping[str, int]) -> str:
    """The worker holding the fewest active mailboxes (ties broken by id, so it is stable)."""
    if not loads:
        raise ValueError("no live worker to place a mailbox on")
    return min(loads, key=lambda worker: (loads[worker], worker))
