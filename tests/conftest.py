"""Fixtures shared by every suite: real services, fresh databases, running systems."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import harness


@pytest.fixture(scope="session")
def services() -> None:
    """PostgreSQL and RabbitMQ are reachable and the template database is built."""
    harness.require_services()
    harness.build_template()


@pytest.fixture
def database(services: None) -> Iterator[str]:
    """The URL of a fresh database built from schema.sql, dropped afterwards."""
    name = harness.create_database()
    yield harness.database_url(name)
    harness.drop_database(name)


@pytest.fixture(scope="module")
def system(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.System]:
    """A running gateway and two workers with their own database and broker namespace."""
    with harness.running_system(tmp_path_factory.mktemp("system")) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and "system" in getattr(item, "fixturenames", ()):
        running = item.funcargs.get("system")  # type: ignore[attr-defined]
        if isinstance(running, harness.System):
            report.sections.append(("seriatim process logs", running.logs()))
    return report
