"""Prometheus metrics of every seriatim process (labels bounded: never a client id), the
journal-wide gauges, and the worker's metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics

from actors import tracing
from actors.states import EventStatus, MailboxState, SuspensionCause

log = logging.getLogger(__name__)

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_WAIT = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# --- HTTP (gateway) ------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "seriatim_http_requests",
    "HTTP requests answered, by route template, method and status class (2xx, 4xx, ...).",
    ["route", "method", "status_class"],
)
HTTP_SECONDS = Histogram(
    "seriatim_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=_LATENCY,
)
HTTP_IN_FLIGHT = Gauge("seriatim_http_requests_in_flight", "HTTP requests being answered.")

# --- intake ----------------------------------------------------------------------------------
EVENTS_ACCEPTED = Counter("seriatim_events_accepted", "Events committed to the journal (202).")
EVENTS_REJECTED = Counter(
    "seriatim_events_rejected", "Event submissions refused, by reason.", ["reason"]
)
REJECTION_REASONS = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}

# --- processing ------------------------------------------------------------------------------
EVENTS_PROCESSED = Counter(
    "seriatim_events_processed", "Events that reached a terminal state, by outcome.", ["outcome"]
)
ATTEMPTS = Counter("seriatim_attempts", "Handler attempts, by result.", ["result"])
PROCESSING_SECONDS = Histogram(
    "seriatim_event_processing_seconds",
    "Time from an event's first attempt to its outcome.",
    buckets=_LATENCY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "seriatim_event_queue_wait_seconds",
    "Time from an event's acceptance to the start of its first attempt.",
    buckets=_WAIT,
)
RESTARTS = Counter(
    "seriatim_mailbox_restarts", "Failed attempts that will be retried in place (retries)."
)

# --- handler execution (actors/threads.py, actors/watchdog.py) ------------------------------
HANDLER_THREADS = Gauge(
    "seriatim_handler_threads",
    "Plain-function handler slots of this worker: limit, running (calls not yet ended), "
    "overdue (running past the handler timeout, still holding their slot) and waiting "
    "(calls waiting for a free slot).",
    ["state"],
)
HANDLER_SLOT_WAIT = Histogram(
    "seriatim_handler_slot_wait_seconds",
    "Time a plain-function handler call waited for a free slot.",
    buckets=_WAIT,
)
FENCED = Counter(
    "seriatim_mailbox_fenced",
    "Attempt writes refused because the mailbox had been placed elsewhere (stale epoch).",
)


class _Threads(Protocol):
    size: int
    running: int
    overdue: int
    waiting: int


def track_handler_threads(threads: _Threads) -> None:
    """Report a handler thread pool's slots (the last pool made in this process)."""
    HANDLER_THREADS.labels("limit").set_function(lambda: threads.size)
    HANDLER_THREADS.labels("running").set_function(lambda: threads.running)
    HANDLER_THREADS.labels("overdue").set_function(lambda: threads.overdue)
    HANDLER_THREADS.labels("waiting").set_function(lambda: threads.waiting)


SUPERVISOR_ACTIVE = Gauge(
    "seriatim_supervisor_active",
    "1 while the supervisor in this process is the active one (of all workers, one should be).",
)

# --- mailbox lifecycle -----------------------------------------------------------------------
ACTIVE_MAILBOXES = Gauge("seriatim_mailboxes_active", "Mailboxes active in this process.")
ACTIVATIONS = Counter("seriatim_mailbox_activations", "Mailboxes this process started consuming.")
PASSIVATIONS = Counter("seriatim_mailbox_passivations", "Idle mailboxes this process passivated.")
QUEUES_DELETED = Counter(
    "seriatim_mailbox_queues_deleted",
    "Empty queues of passivated mailboxes this process deleted (SERIATIM_DELETE_IDLE_QUEUES).",
)
SUSPENSIONS = Counter(
    "seriatim_mailbox_suspensions", "Mailboxes suspended by the supervisor, by cause.", ["cause"]
)
QUEUE_REFUSALS = Counter(
    "seriatim_mailbox_queue_refusals",
    "Mailbox queue declares the broker refused, by reply code (404, 406, 541, timeout, ...).",
    ["code"],
)
CONSUME_CHANNEL_REOPENS = Counter(
    "seriatim_consume_channel_reopens", "Consume channels reopened after the broker closed one."
)

# --- the journal as a whole: registered only by the processes that read them (the workers),
# each reporting the same figure, so aggregate with max ----------------------------------------
MAILBOXES = Gauge(
    "seriatim_mailboxes", "Mailboxes in the journal, by state.", ["state"], registry=None
)
BACKLOG = Gauge(
    "seriatim_backlog_events", "Events accepted but not yet terminal, all clients.", registry=None
)
OLDEST_QUEUED = Gauge(
    "seriatim_oldest_queued_event_age_seconds",
    "Age of the oldest event not yet terminal (0 when there is none).",
    registry=None,
)
RELAY_LAG = Gauge(
    "seriatim_relay_lag_seconds",
    "Age of the oldest accepted event not yet published to RabbitMQ (0 when there is none).",
    registry=None,
)
JOURNAL_READ = Gauge(
    "seriatim_journal_gauges_timestamp_seconds",
    "When the journal-wide gauges were last read (unix time).",
    registry=None,
)
_JOURNAL_GAUGES = (MAILBOXES, BACKLOG, OLDEST_QUEUED, RELAY_LAG, JOURNAL_READ)
RELAYED = Counter("seriatim_relay_republished", "Events the outbox relay published again.")
EVENT_PUBLISH_RETRIES = Counter(
    "seriatim_event_publish_retries",
    "Event publishes retried: the broker nacked them or closed their events connection.",
)
RELAY_SKIPPED = Counter(
    "seriatim_relay_skipped_clients",
    "Clients the outbox relay left for its next pass because a publish failed (refused, "
    "returned or unconfirmed), once per client and pass; the log names the client.",
)

# --- dependencies ----------------------------------------------------------------------------
DB_POOL = Gauge("seriatim_db_pool_connections", "PostgreSQL pool connections, by state.", ["state"])
BROKER_CONNECTED = Gauge(
    "seriatim_broker_connected", "1 while this process has a working RabbitMQ connection."
)
ASYNC_STANDBYS = Gauge(
    "seriatim_journal_async_standbys",
    "Asynchronous streaming standbys of the journal's PostgreSQL, as seen when this process "
    "started: a failover to one can lose events already accepted (0 when none).",
)
JOURNAL_STATEMENTS = Counter(
    "seriatim_journal_statements",
    "Statements sent through the journal's pool, by named query: each is one round trip to "
    "PostgreSQL and, outside an explicit transaction, one commit.",
    ["query"],
)
AMQP_METHODS = Counter(
    "seriatim_amqp_methods",
    "AMQP methods this process sent, by method; those named *_wait waited for the broker's "
    "answer (one round trip each).",
    ["method"],
)
BROKER_CONNECTS = Counter(
    "seriatim_broker_connections_opened", "RabbitMQ connections opened (1 + reconnects)."
)

for outcome in (EventStatus.SUCCEEDED, EventStatus.DEAD):
    EVENTS_PROCESSED.labels(outcome)
for result in ("ok", "failed"):
    ATTEMPTS.labels(result)
for cause in SuspensionCause:
    SUSPENSIONS.labels(cause)
for state in MailboxState:
    MAILBOXES.labels(state)
for reason in sorted(set(REJECTION_REASONS.values())):
    EVENTS_REJECTED.labels(reason)


_exemplars = {"on": False}  # SERIATIM_METRICS_EXEMPLARS, set once per process by the CLI


def use_exemplars(on: bool) -> None:
    """Attach trace ids to observations from now on (or not). Off by default: `/metrics` is
    not authenticated, and exemplars name other tenants' traces (docs/observability.md)."""
    _exemplars["on"] = on


def exemplar() -> dict[str, str] | None:
    """The current trace id as an exemplar (shown in the OpenMetrics format only), when
    exemplars are on; else None."""
    if not _exemplars["on"]:
        return None
    ids = tracing.current_ids()
    return {"trace_id": ids[0]} if ids else None


def observe_queue_wait(seconds: float) -> None:
    QUEUE_WAIT_SECONDS.observe(seconds, exemplar())


def observe_processing(seconds: float) -> None:
    PROCESSING_SECONDS.observe(seconds, exemplar())


def watch_pool(size: Callable[[], int], idle: Callable[[], int]) -> None:
    """Report a connection pool's size as in use / idle connections."""
    DB_POOL.labels("in_use").set_function(lambda: size() - idle())
    DB_POOL.labels("idle").set_function(idle)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics in OpenMetrics (with exemplars) when the scraper accepts it, else text."""
    if accept and "application/openmetrics-text" in accept:
        body: bytes = openmetrics.generate_latest(REGISTRY)  # type: ignore[no-untyped-call]
        return body, openmetrics.CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def set_journal_gauges(row: Any) -> None:
    """Set the journal-wide gauges from one row of the `observability_gauges` query."""
    backing_off = row["backing_off"]
    MAILBOXES.labels(MailboxState.IDLE).set(row["idle"])
    MAILBOXES.labels(MailboxState.ACTIVE).set(row["active"] - backing_off)
    MAILBOXES.labels(MailboxState.BACKING_OFF).set(backing_off)
    MAILBOXES.labels(MailboxState.SUSPENDED).set(row["suspended"])
    BACKLOG.set(row["backlog"])
    OLDEST_QUEUED.set(row["oldest_age"] or 0.0)
    RELAY_LAG.set(row["relay_lag"] or 0.0)
    JOURNAL_READ.set_to_current_time()


class _GaugeSource(Protocol):
    async def observability_gauges(self) -> Any: ...


async def refresh_journal_gauges(
    journal: _GaugeSource, stopping: asyncio.Event, every: float = 5.0
) -> None:
    """Export the journal-wide gauges from this process and read them every `every` seconds
    until `stopping` is set."""
    for gauge in _JOURNAL_GAUGES:
        with contextlib.suppress(ValueError):  # registered already (a second worker in-process)
            REGISTRY.register(gauge)
    while not stopping.is_set():
        try:
            set_journal_gauges(await journal.observability_gauges())
        except Exception as error:  # an outage must not stop the worker; the next read fixes it
            log.debug("could not read the journal gauges: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)


Render = Callable[[str | None], Awaitable[tuple[bytes, str]]]


async def _local(accept: str | None) -> tuple[bytes, str]:
    return exposition(accept)


#: Why the process is not ready, or None when it is.
Readiness = Callable[[], str | None]


async def serve_metrics(
    host: str,
    port: int,
    stopping: asyncio.Event,
    render: Render = _local,
    unready: Readiness | None = None,
) -> None:
    """Answer GET /metrics until `stopping` is set: this process's metrics (OpenMetrics when
    asked for), or whatever `render(accept_header)` makes; and GET /readyz when `unready` is
    given: 200, or 503 with the reason it returns."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            route = path.split(b"?")[0] if request.startswith(b"GET ") else b""
            if route == b"/metrics":
                body, kind = await render(_header(request, b"accept"))
                status = b"200 OK"
            elif route == b"/readyz" and unready is not None:
                status, body, kind = _readiness(unready())
            else:
                status, body, kind = b"404 Not Found", b"not found: try /metrics\n", "text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + kind.encode()
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

    try:
        server = await asyncio.start_server(answer, host, port, limit=16384)
    except OSError as error:  # a taken port costs the metrics, never the process
        log.error("cannot serve metrics on %s:%d: %s", host, port, error)
        return
    log.info("metrics on http://%s:%d/metrics", host, port)
    async with server:
        await stopping.wait()


def _readiness(reason: str | None) -> tuple[bytes, bytes, str]:
    if reason is None:
        return b"200 OK", b"ready\n", "text/plain"
    return b"503 Service Unavailable", f"not ready: {reason}\n".encode(), "text/plain"


def _header(request: bytes, name: bytes) -> str | None:
    for line in request.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None
