"""The gateway's HTTP/1.1 connections: uvicorn's h11 protocol with a hard limit on the request
head, deadlines for reading the head and the body, and problem+json for what it refuses.

uvicorn has no head-read deadline, and h11 checks its size limit only while a head is
incomplete: a 64 KiB head that arrives in one read passes. This protocol counts the head
itself, so a slow client cannot hold a connection and a big head cannot reach the app.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_END_OF_HEAD = b"\r\n\r\n"
_PHRASES = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
_SLUGS = {400: "invalid-http", 408: "request-timeout", 431: "header-too-large"}
_LINGER = 1.0  # seconds to drain what a refused client still sends, so it reads our answer


def guarded_protocol(max_head: int, head_timeout: float, body_timeout: float) -> type[Any]:
    """An h11 protocol class with these limits, for `uvicorn.Config(http=...)`."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_head": max_head, "head_timeout": head_timeout, "body_timeout": body_timeout},
    )


class GuardedH11Protocol(H11Protocol):
    max_head = 16384
    head_timeout = 10.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = bytearray()
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # drained and dropped until the connection closes
        if self.conn.their_state is h11.IDLE:
            if self._deadline is None:
                self._arm(self.head_timeout, self._head_too_slow)
            self._head += data
            end = self._head.find(_END_OF_HEAD)
            if (end == -1 and len(self._head) > self.max_head) or end > self.max_head:
                self._refuse(431, "the request head (request line and headers) is too large")
                return
        super().data_received(data)
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._head.clear()
            if state is h11.SEND_BODY and not self._reading_body:
                self._reading_body = True  # the app answers 408 first; this is the backstop
                self._arm(self.body_timeout + 2, self._body_too_slow)
            elif state is not h11.SEND_BODY:
                self._reading_body = False
                self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is not h11.SEND_BODY:
            self._reading_body = False
            self._disarm()
            if self.conn.trailing_data[0]:  # the start of another head is waiting
                self._arm(self.head_timeout, self._head_too_slow)

    def send_400_response(self, msg: str) -> None:
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # too late for an answer of our own
            return
        self._refuse(400, "the request is not valid HTTP/1.1")

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
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self._head or self.conn.trailing_data[0]:
            self._refuse(408, "the request head was not received in time")
        else:
            self.transport.close()  # a connection that never asked anything

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.logger.info("closed a connection whose request body was not received in time")
            self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` outside h11 (no request was parsed), then drain and close."""
        self._refused = True
        self._disarm()
        self.logger.info("refused a request: %s", detail)
        body = json.dumps(
            {
                "type": f"urn:seriatim:problem:{_SLUGS[status]}",
                "title": _PHRASES[status],
                "status": status,
                "detail": detail,
            }
        ).encode()
        head = (
            f"HTTP/1.1 {status} {_PHRASES[status]}\r\n"
            "content-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER, self.transport.close)
