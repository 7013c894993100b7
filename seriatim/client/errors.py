"""The client's errors: one hierarchy, caught by its base class `SeriatimError`.

A refused request raises a `ProblemError` (or the subclass for its status) carrying the fields
of the gateway's application/problem+json body; what never reached an answer raises
`TransportError`.
"""

from __future__ import annotations

from typing import Any


class SeriatimError(Exception):
    """Anything the client raises on purpose."""


class TransportError(SeriatimError):
    """No answer from the gateway (refused, dropped or timed-out connections), retries spent."""


class ProblemError(SeriatimError):
    """The gateway refused the request: its problem+json fields, and `extra` for the rest
    (`errors` of a batch, the OAuth `error` of the token endpoint, ...)."""

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        extra: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.extra = extra or {}
        self.retry_after = retry_after

    @classmethod
    def from_answer(cls, status: int, body: Any, retry_after: float | None = None) -> ProblemError:
        """The error for an answer, of the subclass for its status."""
        fields = dict(body) if isinstance(body, dict) else {}
        kind = _BY_STATUS.get(status, ProblemError)
        return kind(
            status,
            str(fields.pop("type", "about:blank")),
            str(fields.pop("title", "")),
            str(fields.pop("detail", "")),
            {name: value for name, value in fields.items() if name != "status"},
            retry_after,
        )


class AuthenticationError(ProblemError):
    """401: bad client credentials, or a token the gateway refuses."""


class ForbiddenError(ProblemError):
    """403: the token lacks the scope."""


class NotFoundError(ProblemError):
    """404: no such event (or another client's)."""


class ConflictError(ProblemError):
    """409: e.g. the same idempotency key while its first request is still in progress."""


class InvalidRequestError(ProblemError):
    """400, 413, 415 and 422: the request itself is wrong; sending it again cannot help."""


class RateLimitedError(ProblemError):
    """429: over the client's rate; `retry_after` says when to try again."""


class UnavailableError(ProblemError):
    """503: overloaded, or the database or broker is unreachable; `retry_after` says when."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}
