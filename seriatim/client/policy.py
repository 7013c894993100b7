"""What the sync and async clients share: the retry schedule, token freshness, the shape of
requests and the reading of answers. No I/O here."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from seriatim.client.errors import ConflictError, ProblemError

#: Answers that a later attempt of the same request may get past.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """Passed to `on_retry` before each wait: which attempt failed, why, and the wait."""

    attempt: int
    reason: str  # "429", "503", ..., or the name of the connection error
    delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, never shorter than the gateway's Retry-After."""

    attempts: int = 6  # tries of one request in all
    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jittered = random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))
        return max(jittered, retry_after or 0.0)


@dataclasses.dataclass(slots=True)
class Token:
    """An access token and when it stops being worth using."""

    value: str
    expires_at: float  # monotonic seconds

    @classmethod
    def from_grant(cls, grant: Mapping[str, Any], margin: float) -> Token:
        """Refresh `margin` seconds before expiry, or at half the lifetime when that is sooner."""
        lifetime = float(grant.get("expires_in", 3600))
        return cls(
            str(grant["access_token"]), time.monotonic() + lifetime - min(margin, lifetime / 2)
        )

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at


def new_key() -> str:
    """An idempotency key for one logical send, kept across its retries."""
    return f"seriatim-client-{uuid.uuid4()}"


def batch_body(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body of POST /v1/events/batch; every item gets a key so retries never duplicate."""
    events = []
    for item in items:
        event = {"type": item["type"], "payload": item["payload"]}
        event["idempotency_key"] = item.get("idempotency_key") or new_key()
        events.append(event)
    return {"events": events}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (the gateway sends delta-seconds); None when absent or a date."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def retryable(status: int, error: ProblemError | None, key_in_flight: bool) -> bool:
    """Whether another attempt may succeed: 429/5xx-overload, and a 409 for an idempotency key
    whose first attempt (perhaps ours, cut off) is still in progress."""
    if status in RETRY_STATUSES:
        return True
    in_use = isinstance(error, ConflictError) and error.type.endswith("idempotency-key-in-use")
    return key_in_flight and in_use


def body_of(content: bytes, json: Callable[[], Any]) -> Any:
    """The JSON of an answer, or None when it has none."""
    if not content:
        return None
    try:
        return json()
    except ValueError:
        return None


def page_params(status: str | None, after_seq: int | None, limit: int | None) -> dict[str, Any]:
    """The query of one page of GET /v1/events."""
    given = {"status": status, "after_seq": after_seq, "limit": limit}
    return {name: value for name, value in given.items() if value is not None}


def scope_field(scope: str | None) -> dict[str, str]:
    return {"scope": scope} if scope else {}
