"""The start-up durability rule: refuse what a crash loses, report what a failover can lose."""

from __future__ import annotations

import logging

import pytest

from actors import metrics
from actors.store.durability import Durability, check


def durability(**changes: object) -> Durability:
    values: dict[str, object] = {
        "fsync": "on",
        "synchronous_commit": "on",
        "synchronous_standby_names": "",
        "standbys": 0,
        "synchronous_standbys": 0,
    }
    return Durability(**{**values, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes", [{"fsync": "off"}, {"synchronous_commit": "off"}, {"synchronous_commit": "local"}]
)
def test_what_a_crash_would_lose_stops_the_start(changes: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match="refuses to start"):
        check(durability(**changes))


@pytest.mark.parametrize(
    ("changes", "level", "gauge"),
    [
        ({}, None, 0),
        ({"standbys": 2, "synchronous_standbys": 2, "synchronous_standby_names": "*"}, None, 0),
        ({"standbys": 1}, logging.ERROR, 1),
        ({"standbys": 1, "synchronous_standby_names": "a"}, logging.ERROR, 1),  # a is not there
        (
            {"standbys": 2, "synchronous_standbys": 1, "synchronous_standby_names": "a"},
            logging.WARNING,
            1,
        ),
    ],
)
def test_standbys_a_failover_could_lose_commits_to_are_reported(
    changes: dict[str, object], level: int | None, gauge: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "actors.store.durability"):
        check(durability(**changes))

    assert [r.levelno for r in caplog.records] == ([] if level is None else [level])
    assert metrics.ASYNC_STANDBYS._value.get() == gauge
