"""What PostgreSQL could lose of what the journal committed, checked when a process starts.

A crash loses commits when fsync or synchronous_commit is off: the check refuses to start.
A failover loses the commits an asynchronous standby had not received yet, events that got a
202 among them, and their seqs are then given again: the check says so at ERROR level and in
the `seriatim_journal_async_standbys` gauge, but starts (see docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import logging

from actors import metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Durability:
    """One row of the `durability` query."""

    fsync: str
    synchronous_commit: str
    synchronous_standby_names: str
    standbys: int  # streaming (or catching up) physical standbys
    synchronous_standbys: int  # those whose sync_state is sync or quorum

    @property
    def crash_safe(self) -> bool:
        return self.fsync == "on" and self.synchronous_commit not in ("off", "local")

    @property
    def async_standbys(self) -> int:
        return self.standbys - self.synchronous_standbys


def check(durability: Durability) -> None:
    """Raise RuntimeError when a crash would lose commits; report the standbys a failover
    could lose commits to (ERROR when none is synchronous, WARNING when some are)."""
    if not durability.crash_safe:
        raise RuntimeError(
            f"PostgreSQL durability is off (fsync={durability.fsync}, synchronous_commit="
            f"{durability.synchronous_commit}): seriatim refuses to start, accepted events "
            "could be lost on a crash"
        )
    metrics.ASYNC_STANDBYS.set(durability.async_standbys)
    if not durability.async_standbys:
        return
    if not durability.synchronous_standbys:
        log.error(
            "PostgreSQL streams to %d asynchronous standby(s) and to no synchronous one "
            "(synchronous_standby_names=%r): after a failover to one of them, events already "
            "accepted with 202 can be lost and their seqs given again to new events. Name "
            "the standbys in synchronous_standby_names on the primary, or fail over only "
            "after they have replayed everything (docs/reliability.md)",
            durability.async_standbys,
            durability.synchronous_standby_names,
        )
        return
    log.warning(
        "PostgreSQL streams to %d asynchronous standby(s) besides %d synchronous one(s): "
        "fail over only to a synchronous standby, a failover to an asynchronous one can lose "
        "events already accepted with 202 (docs/reliability.md)",
        durability.async_standbys,
        durability.synchronous_standbys,
    )
