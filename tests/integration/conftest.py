"""Fixtures of the integration suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.store import Journal


@pytest.fixture
async def journal(database: str) -> AsyncIterator[Journal]:
    """A journal on a fresh database, closed afterwards."""
    journal = await Journal.connect(database, min_size=1, max_size=4)
    yield journal
    await journal.close()
