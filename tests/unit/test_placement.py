"""Placement: the least loaded live worker takes the next mailbox."""

from __future__ import annotations

import pytest

from supervision.placement import least_loaded


def test_worker_with_fewest_mailboxes_wins() -> None:
    assert least_loaded({"w-a": 3, "w-b": 1, "w-c": 2}) == "w-b"


def test_tie_is_broken_by_the_lowest_id() -> None:
    assert least_loaded({"w-c": 1, "w-a": 1, "w-b": 1}) == "w-a"


def test_tie_break_ignores_the_order_of_the_mapping() -> None:
    assert least_loaded({"w-b": 0, "w-a": 0}) == least_loaded({"w-a": 0, "w-b": 0}) == "w-a"


def test_single_worker_takes_every_mailbox() -> None:
    assert least_loaded({"only": 40}) == "only"


def test_no_live_worker_raises() -> None:
    with pytest.raises(ValueError, match="no live worker"):
        least_loaded({})
