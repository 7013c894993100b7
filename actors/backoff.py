"""Exponential backoff with jitter between in-place retries: a pure policy value."""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """`min * 2**(attempt-1)` capped at `max`, shortened by up to `jitter` of itself."""

    min: float = 0.1
    max: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError("backoff wants 0 <= min <= max")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter is a fraction between 0 and 1")

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        base = min(self.max, self.min * 2.0 ** min(attempt - 1, 64))
        r = random.random() if rand is None else rand
        return base * (1.0 - self.jitter * r)
