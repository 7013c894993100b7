"""Restart intensity, as OTP supervisors have it: at most N failures within a period."""

from __future__ import annotations

import collections
import dataclasses
import math


@dataclasses.dataclass(frozen=True, slots=True)
class RestartIntensity:
    """More than `max_restarts` failed attempts within `within` seconds escalate."""

    max_restarts: int = 50
    within: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 1:
            raise ValueError("restart intensity needs max_restarts >= 1")
        if not (self.within > 0 and math.isfinite(self.within)):
            raise ValueError("restart intensity needs a finite period > 0 seconds")

    def exceeded(self, failures: collections.deque[float], now: float) -> bool:
        """Record a failure at `now` in `failures` (oldest first); True when it is one too many.

        Failures older than the period are dropped from the deque.
        """
        failures.append(now)
        while failures and failures[0] <= now - self.within:
            failures.popleft()
        return len(failures) > self.max_restarts
