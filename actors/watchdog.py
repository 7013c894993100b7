"""A worker ends itself before its lease can lapse while it runs a handler it cannot stop.

The supervisor moves a worker's mailboxes once the worker's heartbeat is older than the
liveness window or its lease's lock is gone (supervision/supervisor.py). A handler running
then (a plain function past its timeout, an async handler blocking the loop) would overlap
with the mailbox's next owner. So while any handler runs, this process must not outlive its
lease: a thread of its own (it runs while the loop is blocked) kills the process once the
last successful renewal was sent longer than `deadline` ago, well inside the window, and a
renewal that fails (its connection, and with it the lock, is about to go) kills it at once.
With no handler running there is nothing to overlap: the worker lives on through a database
outage, and starts no attempt until its lease is fresh again (`fresh`).

A process frozen by the operating system freezes this thread too; for that, see the
placement epoch (docs/reliability.md, "A frozen worker").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

#: How often the watchdog thread looks.
PERIOD = 0.1


def _kill_self(reason: str) -> None:
    print(f"seriatim watchdog: {reason}; ending the worker now", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class Watchdog:
    """Counts running handler executions and ends the process if its lease may lapse."""

    def __init__(
        self, deadline: float, *, margin: float = 0.0, kill: Callable[[str], None] = _kill_self
    ) -> None:
        self.deadline = deadline
        #: How much fresher than the deadline a lease must be for an attempt to start.
        self.margin = margin
        self.executions = 0  # changed on the loop only; read by the thread
        self._kill = kill
        self._renewed_at: float | None = None  # when the last successful renewal was sent
        self._ticked_at = time.monotonic()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the loop's side -------------------------------------------------------------------

    @contextlib.contextmanager
    def executing(self) -> Iterator[None]:
        """Count a handler execution for as long as the block runs."""
        self.executions += 1
        try:
            yield
        finally:
            self.executions -= 1

    def renewed(self, sent_at: float) -> None:
        """A lease renewal sent at `sent_at` (time.monotonic()) succeeded."""
        self._renewed_at = sent_at if self._renewed_at is None else max(self._renewed_at, sent_at)

    def lapsing(self, why: str) -> None:
        """The lease is about to be given up (its connection failed or the worker leaves):
        with a handler running, end the process before the lock goes."""
        self._renewed_at = None
        if self.executions:
            self._kill(f"its lease is lost ({why}) while {self.executions} handler(s) run")

    def end(self, why: str) -> None:
        """End the process now: a handler runs that must not outlive what `why` says."""
        self._kill(why)

    def fresh(self) -> bool:
        """Whether an attempt may start: the lease was renewed well within the deadline (a
        margin (`margin`, a heartbeat interval) before the watchdog would end the process)."""
        renewed = self._renewed_at
        return renewed is not None and time.monotonic() - renewed < self.deadline - self.margin

    def tick(self) -> None:
        """The loop is turning (called by a task every PERIOD)."""
        self._ticked_at = time.monotonic()

    # --- the watchdog thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="seriatim-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(PERIOD):
            reason = self.expired()
            if reason is not None:
                self._kill(reason)
                return

    def expired(self) -> str | None:
        """Why the process must end now, or None."""
        if not self.executions:
            return None
        now = time.monotonic()
        if now - self._ticked_at > self.deadline:
            return (
                f"the event loop has been blocked for {now - self._ticked_at:.1f} s "
                f"(a handler blocks it) while {self.executions} handler(s) run"
            )
        renewed = self._renewed_at
        if renewed is not None and now - renewed > self.deadline:
            return (
                f"the lease was last renewed {now - renewed:.1f} s ago while "
                f"{self.executions} handler(s) run"
            )
        return None


async def tick(watchdog: Watchdog, stopping: asyncio.Event) -> None:
    """Tell the watchdog the loop turns, every PERIOD, until `stopping` is set."""
    while not stopping.is_set():
        watchdog.tick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), PERIOD)
