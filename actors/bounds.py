"""The ranges a setting or an API value must lie in, each written once for its validator, its
error text and the OpenAPI document."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Bounds:
    """low-high inclusive; `integer` refuses a fraction. Never holds a bool."""

    low: float
    high: float
    integer: bool = False

    def holds(self, value: Any) -> bool:
        kinds = int if self.integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        return bool(self.low <= value <= self.high)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a value in these bounds."""
        kind = "integer" if self.integer else "number"
        return {"type": kind, "minimum": self.low, "maximum": self.high}


#: A client's restart intensity: at most `max_restarts` failures `within` seconds.
MAX_RESTARTS = Bounds(1, 100000, integer=True)
RESTART_WITHIN = Bounds(0.1, 86400)
#: A client's intake rate.
RATE_PER_SECOND = Bounds(0.001, 1_000_000)
RATE_BURST = Bounds(1, 1_000_000, integer=True)
