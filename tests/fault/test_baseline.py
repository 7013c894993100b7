"""The oracle on a run without faults: if this fails, the fault scenarios mean nothing."""

from __future__ import annotations

import asyncio

import pytest

from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.recovery import eventually
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration


async def test_steady_load_without_faults_satisfies_the_oracle(system: System) -> None:
    # Given the outcome audit and steady load from several clients
    install_audit(system)
    load = Load(system, clients=8, per_second=40)
    await load.prepare()
    running = asyncio.create_task(load.run())

    # When it runs until a few dozen events are accepted (however slow the machine), and stops
    await eventually(lambda: len(load.accepted) >= 40, 60, "40 events to be accepted")
    load.stop()
    await running

    # Then every accepted event is terminal, in order, once
    wait_for(lambda: all_terminal(system), 60, "all events to finish")
    report = check(system, load.answered, may_fail=False)
    assert report.ok, report
    assert report.accepted >= 40
