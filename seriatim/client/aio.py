"""`AsyncClient`: the asyncio client for submitters, on httpx; `Client` awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from seriatim.client.errors import AuthenticationError, ProblemError, TransportError
from seriatim.client.policy import (
    Backoff,
    Retry,
    Token,
    batch_body,
    body_of,
    new_key,
    page_params,
    retry_after,
    retryable,
    scope_field,
)


class AsyncClient:
    """An asyncio client of one seriatim gateway, with its own credentials.

    Fetches its token and refreshes it `refresh_margin` seconds before expiry (and once more on
    a 401 refusing it); retries 429, 502-504 and connection errors with `backoff`, never sooner
    than Retry-After; raises `ProblemError` subclasses for refusals, `TransportError` when no
    answer came. Use it as an async context manager or await `close()`.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        backoff: Backoff | None = None,
        refresh_margin: float = 60.0,
        timeout: float = 30.0,
        on_retry: Callable[[Retry], None] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http or httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._scope = scope
        self._backoff = backoff or Backoff()
        self._margin = refresh_margin
        self._on_retry = on_retry
        self._token: Token | None = None

    # --- the API ----------------------------------------------------------------------

    async def send(
        self, type: str, payload: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/events: the accepted event (`replayed: True` when the gateway had it).
        A key is generated when none is given, and kept across retries."""
        key = idempotency_key or new_key()
        answer = await self._call(
            "POST",
            "/v1/events",
            json={"type": type, "payload": dict(payload)},
            headers={"Idempotency-Key": key},
            keyed=True,
        )
        return {**(answer).json(), "replayed": answer.headers.get("idempotent-replayed") == "true"}

    async def send_batch(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """POST /v1/events/batch: items `{"type", "payload", "idempotency_key"?}`, all or none;
        the accepted events in order."""
        answer = await self._call("POST", "/v1/events/batch", json=batch_body(items), keyed=True)
        return list(answer.json()["items"])

    async def event(self, event_id: str) -> dict[str, Any]:
        """GET /v1/events/{id}."""
        return dict((await self._call("GET", f"/v1/events/{event_id}")).json())

    async def events(
        self, status: str | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The client's events in `seq` order, page after page."""
        while True:
            params = page_params(status, after_seq, limit)
            page = (await self._call("GET", "/v1/events", params=params)).json()
            for item in page["items"]:
                yield item
            after_seq = page["next_after_seq"]
            if after_seq is None:
                return

    async def mailbox(self) -> dict[str, Any]:
        """GET /v1/mailbox."""
        return dict((await self._call("GET", "/v1/mailbox")).json())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- requests ---------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, keyed: bool = False, **request: Any
    ) -> httpx.Response:
        refreshed = False
        while True:
            token = await self._bearer()
            headers = {**request.pop("headers", {}), "Authorization": f"Bearer {token}"}
            request["headers"] = headers
            try:
                return await self._attempt(method, path, keyed, **request)
            except AuthenticationError:
                if refreshed:  # a new token refused too: the credentials are the problem
                    raise
                self._token, refreshed = None, True

    async def _bearer(self) -> str:
        if self._token is None or not self._token.fresh():
            grant = (
                await self._attempt(
                    "POST",
                    "/v1/token",
                    False,
                    data={"grant_type": "client_credentials", **scope_field(self._scope)},
                    auth=self._auth,
                )
            ).json()
            self._token = Token.from_grant(grant, self._margin)
        return self._token.value

    async def _attempt(self, method: str, path: str, keyed: bool, **request: Any) -> httpx.Response:
        """The request, retried on what a retry may get past; raises the last refusal."""
        for attempt in range(1, self._backoff.attempts + 1):
            last = attempt == self._backoff.attempts
            try:
                answer = await self._http.request(method, path, **request)
            except httpx.TransportError as error:
                if last:
                    raise TransportError(f"{method} {path}: {error!r}") from error
                await self._wait(
                    Retry(attempt, type(error).__name__, self._backoff.delay(attempt, None))
                )
                continue
            if answer.is_success:
                return answer
            wait = retry_after(answer.headers)
            refused = ProblemError.from_answer(
                answer.status_code, body_of(answer.content, answer.json), wait
            )
            if last or not retryable(answer.status_code, refused, keyed):
                raise refused
            await self._wait(
                Retry(attempt, str(answer.status_code), self._backoff.delay(attempt, wait))
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self, retry: Retry) -> None:
        if self._on_retry is not None:
            self._on_retry(retry)
        await asyncio.sleep(retry.delay)
