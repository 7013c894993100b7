"""Retention: finished events older than SERIATIM_RETENTION are deleted in the background, in
bounded batches with a pause between them, by one process at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from actors.settings import Settings
from actors.store import Journal

log = logging.getLogger(__name__)


async def retire_finished(journal: Journal, settings: Settings, stopping: asyncio.Event) -> None:
    """Every `retention_interval` seconds until `stopping` is set, delete what retention lets
    go, unless another process is doing it. Does nothing with retention off (0)."""
    if not settings.retention:
        return
    while not stopping.is_set():
        try:
            deleted = await _round(journal, settings, stopping)
        except Exception as error:  # an outage or a conflict: the next round tries again
            log.warning("retention round failed: %s", error)
        else:
            if deleted:
                log.info("retention deleted %d finished events", deleted)
        await _wait(stopping, settings.retention_interval)


async def _round(journal: Journal, settings: Settings, stopping: asyncio.Event) -> int:
    """Batches until one comes back short (nothing more is old enough); the count deleted."""
    total = 0
    async with journal.retirer() as retirer:
        if retirer is None:
            return 0  # another process holds the deleter's lock
        while not stopping.is_set():
            deleted = await retirer.retire(settings.retention, settings.retention_batch)
            total += deleted
            if deleted < settings.retention_batch:
                break
            await _wait(stopping, settings.retention_pause)
    return total


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
