"""Placement: which live worker process takes the next mailbox."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def least_loaded(loads: Mapping[str, int]) -> str:
    """The worker holding the fewest active mailboxes (ties broken by id, so it is stable)."""
    if not loads:
        raise ValueError("no live worker to place a mailbox on")
    return min(loads, key=lambda worker: (loads[worker], worker))


def plan(clients: Iterable[T], loads: Mapping[str, int]) -> dict[T, str]:
    """Assign each client to the least-loaded worker, counting the assignments as it goes."""
    counts = dict(loads)
    assignment: dict[T, str] = {}
    for client in clients:
        worker = least_loaded(counts)
        assignment[client] = worker
        counts[worker] += 1
    return assignment
