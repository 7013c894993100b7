"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with a hard limit on the
request head, deadlines for reading the head and the body, and problem+json
(`gateway/problems.py`) for what it refuses.

uvicorn has no head-read deadline and no limit on the head with httptools (llhttp buffers a
header of any size). This protocol counts the head itself, as it arrives and as the parser
reports it, so a slow client cannot hold a connection and a big head cannot reach the app.
httptools rather than h11: the same requests cost the gateway ~0.3 ms less CPU each
(docs/decisions.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.problems import MEDIA_TYPE, Problem

_END_OF_HEAD = b"\r\n\r\n"
_SLUGS = {400: "invalid-http", 408: "request-timeout", 431: "header-too-large"}
_LINGER = 1.0  # seconds to drain what a refused client still sends, so it reads our answer
_HEADER_OVERHEAD = 4  # ": " and CRLF around each header's name and value


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


def guarded_protocol(max_head: int, head_timeout: float, body_timeout: float) -> type[Any]:
    """A protocol class with these limits, for `uvicorn.Config(http=...)`."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"max_head": max_head, "head_timeout": head_timeout, "body_timeout": body_timeout},
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    max_head = 16384
    head_timeout = 10.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = bytearray()  # bytes of the head being read, as they arrive
        self._head_size = 0  # the same head as the parser reports it
        self._in_head = True  # between requests or inside a head (not in a body)
        self._asking = False  # a request has begun and is not complete
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._deferred: tuple[int, str] | None = None  # a refusal waiting for earlier answers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # drained and dropped until the connection closes
        if self._in_head:
            if self._deadline is None:  # the first byte of a head on a kept-alive connection
                self._arm(self.head_timeout, self._head_too_slow)
            # Empty lines before a request are skipped by the parser: not part of the head.
            self._head += data.lstrip(b"\r\n") if not self._head else data
            end = self._head.find(_END_OF_HEAD)
            if (end == -1 and len(self._head) > self.max_head) or end > self.max_head:
                self._refuse(431, "the request head (request line and headers) is too large")
                return
        super().data_received(data)

    # --- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._asking = True
        self._in_head = True
        self._head_size = 0
        if self._deadline is None:
            self._arm(self.head_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + _HEADER_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head.clear()  # bytes after it in this read are the body or the next request
        self._arm(self.body_timeout + 2, self._body_too_slow)  # the app answers 408 first
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._asking = False
        self._in_head = True
        self._disarm()
        super().on_message_complete()

    def _count(self, size: int) -> None:
        """Count the head as parsed: a head that began in an earlier read of the same
        pipelined chunk is not in `_head`, but the parser sees all of it."""
        self._head_size += size
        if self._head_size > self.max_head:
            raise _HeadTooLarge  # httptools stops and raises HttpParserCallbackError

    def send_400_response(self, msg: str) -> None:
        if self._head_size > self.max_head:
            self._refuse(431, "the request head (request line and headers) is too large")
        else:
            self._refuse(400, "the request is not valid HTTP/1.1")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred is not None and not self._answering() and not self.transport.is_closing():
            self._write_refusal(*self._deferred)

    # --- deadlines -------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._asking or self._head:
            self._refuse(408, "the request head was not received in time")
        else:
            self.transport.close()  # a connection that never asked anything

    def _body_too_slow(self) -> None:
        self._deadline = None
        if not self._in_head and not self.transport.is_closing():
            self.logger.info("closed a connection whose request body was not received in time")
            self.transport.close()

    def _answering(self) -> bool:
        """An earlier request of this connection still has its answer to come."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` outside the parser (no request reached the app), then drain and
        close; after the answers to earlier pipelined requests, never ahead of them."""
        self._refused = True
        self._disarm()
        self.logger.info("refused a request: %s", detail)
        if self._answering():
            self._deferred = (status, detail)
            return
        self._write_refusal(status, detail)

    def _write_refusal(self, status: int, detail: str) -> None:
        self._deferred = None
        problem = Problem(status, _SLUGS[status], detail)
        body = problem.encoded()
        head = (
            f"HTTP/1.1 {status} {problem.title}\r\n"
            f"content-type: {MEDIA_TYPE}\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)
