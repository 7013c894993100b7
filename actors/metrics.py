"""Prometheus metrics of the runtime (labels bounded: never a client id) and their endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

EVENTS_PROCESSED = Counter(
    "seriatim_events_processed", "Events that reached a terminal state, by outcome.", ["outcome"]
)
ATTEMPTS = Counter("seriatim_attempts", "Handler attempts, by result.", ["result"])
PROCESSING_SECONDS = Histogram(
    "seriatim_event_processing_seconds", "Time from an event's first attempt to its outcome."
)
ACTIVE_MAILBOXES = Gauge("seriatim_mailboxes_active", "Mailboxes active in this process.")
RESTARTS = Counter("seriatim_mailbox_restarts", "Failed attempts that will be retried in place.")
SUSPENSIONS = Counter(
    "seriatim_mailbox_suspensions", "Mailboxes suspended by the supervisor, by cause.", ["cause"]
)

for outcome in ("succeeded", "dead"):
    EVENTS_PROCESSED.labels(outcome)
for result in ("ok", "failed"):
    ATTEMPTS.labels(result)
for cause in ("restart_intensity", "halt"):
    SUSPENSIONS.labels(cause)


async def serve_metrics(host: str, port: int, stopping: asyncio.Event) -> None:
    """Answer GET /metrics in the Prometheus text format until `stopping` is set."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] == b"/metrics":
                status, body, kind = b"200 OK", generate_latest(), CONTENT_TYPE_LATEST.encode()
            else:
                status, body, kind = b"404 Not Found", b"not found: try /metrics\n", b"text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + kind
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, host, port, limit=16384)
    log.info("metrics on http://%s:%d/metrics", host, port)
    async with server:
        await stopping.wait()
