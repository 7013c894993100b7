"""The shared states match what schema.sql lets the journal store; ranges hold what they say."""

from __future__ import annotations

import pathlib
import re

import pytest

from actors.bounds import MAX_RESTARTS, RESTART_WITHIN, Bounds
from actors.states import DeadEventPolicy, EventStatus, MailboxState

SCHEMA = (pathlib.Path(__file__).parents[2] / "schema.sql").read_text()


def checked(column: str) -> list[str]:
    """The values a `CHECK (column IN (...))` of schema.sql allows, in order."""
    found = re.search(rf"CHECK \({column} IN \(([^)]*)\)\)", SCHEMA)
    assert found is not None, column
    return re.findall(r"'([^']*)'", found.group(1))


def test_the_journal_stores_exactly_the_event_statuses() -> None:
    assert checked("status") == [status.value for status in EventStatus]


def test_the_journal_stores_every_mailbox_state_but_backing_off() -> None:
    stored = [state.value for state in MailboxState if state is not MailboxState.BACKING_OFF]
    assert checked("state") == stored


def test_the_journal_stores_exactly_the_dead_event_policies() -> None:
    assert checked("policy") == [policy.value for policy in DeadEventPolicy]


@pytest.mark.parametrize("value", [1, 100000, 50])
def test_an_integer_in_its_bounds_is_held(value: int) -> None:
    assert MAX_RESTARTS.holds(value)


@pytest.mark.parametrize("value", [0, 100001, 1.5, True, "5", None])
def test_an_integer_bound_refuses_what_is_out_of_range_or_not_an_integer(value: object) -> None:
    assert not MAX_RESTARTS.holds(value)


def test_a_number_bound_takes_fractions_but_not_bools() -> None:
    assert RESTART_WITHIN.holds(0.1)
    assert RESTART_WITHIN.holds(86400)
    assert not RESTART_WITHIN.holds(0.05)
    assert not RESTART_WITHIN.holds(True)


def test_the_text_and_the_schema_say_the_same_range() -> None:
    bounds = Bounds(0.001, 1_000_000)

    assert str(bounds) == "0.001-1000000"
    assert bounds.schema() == {"type": "number", "minimum": 0.001, "maximum": 1_000_000}
