"""The seq rule: where an arriving event stands relative to the mailbox's progress."""

from __future__ import annotations

import pytest

from actors.mailbox import Step, classify


def test_seq_below_done_is_a_duplicate() -> None:
    assert classify(3, 7) is Step.DUPLICATE


def test_seq_equal_to_done_is_a_duplicate() -> None:
    assert classify(7, 7) is Step.DUPLICATE


def test_seq_one_past_done_is_next() -> None:
    assert classify(8, 7) is Step.NEXT


def test_seq_further_past_done_is_a_gap() -> None:
    assert classify(9, 7) is Step.GAP


def test_first_event_of_a_fresh_mailbox_is_next() -> None:
    assert classify(1, 0) is Step.NEXT


def test_later_event_of_a_fresh_mailbox_is_a_gap() -> None:
    assert classify(2, 0) is Step.GAP


@pytest.mark.parametrize(
    ("seq", "done", "step"),
    [
        (1, 1, Step.DUPLICATE),
        (1, 2, Step.DUPLICATE),
        (2, 1, Step.NEXT),
        (1_000_001, 1_000_000, Step.NEXT),
        (1_000_000, 1, Step.GAP),
    ],
)
def test_every_seq_falls_in_exactly_the_expected_step(seq: int, done: int, step: Step) -> None:
    assert classify(seq, done) is step
