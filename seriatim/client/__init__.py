"""A Python client for submitters: `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

Install with `pip install 'seriatim[client]'`. Both fetch and refresh their token, generate an
idempotency key per send and keep it across their own retries, retry 429/503 (after
Retry-After) and connection errors with backoff, and raise `ProblemError` subclasses carrying
the gateway's problem+json fields.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401 - the extra this package needs
except ImportError as missing:  # pragma: no cover - depends on the installation
    raise ImportError("seriatim.client needs httpx: pip install 'seriatim[client]'") from missing

from seriatim.client.aio import AsyncClient
from seriatim.client.errors import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProblemError,
    RateLimitedError,
    SeriatimError,
    TransportError,
    UnavailableError,
)
from seriatim.client.policy import Backoff, Retry
from seriatim.client.sync import Client

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Backoff",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "ProblemError",
    "RateLimitedError",
    "Retry",
    "SeriatimError",
    "TransportError",
    "UnavailableError",
]
