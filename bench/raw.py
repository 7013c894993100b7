"""Raw baselines: the bare asyncpg + pika I/O of one event, at the system's concurrency.

intake:    the accept transaction (seriatim's own accept_event: counter update + insert) and a
           confirmed persistent mandatory publish to the client's queue, `--concurrency` at once
           through a pool of 20 connections (the gateway's);
per event: the same intake, plus `--consumers` processes (the system's workers) that consume
           every client queue with prefetch 1, record the outcome (seriatim's fenced
           record_outcome) and ack;
paced:     (bench/intake.py) the intake as an open loop at a given rate, latency from each
           accept's scheduled time to its commit;
over HTTP: (`--http`) the same per-event baseline, but the intake runs in a process of its own
           behind the gateway's HTTP stack (uvicorn with uvloop and httptools, a Starlette
           route), loaded by the benchmarks' HTTP client: the floor of any intake that takes
           events over HTTP. Its route parses the JSON body and reads the client from the
           Authorization header, with no token check and no limits;
journal:   (`--journal`) each delivery runs seriatim's own per-event statements instead of
           the bare fenced outcome: the fenced attempt start before the (empty) handler
           (queries.sql mark_attempt, not waiting for its flush, with the attempt's timeline
           row) and the fenced outcome after it (record_outcome, ending that row): the
           single-row forms a worker runs for a batch of one, under an active placement: the
           journal's work per event, with no framework around it;
counted:   (`--counted`) the least of that: before the bare fenced outcome, an attempt counted
           under the placement's fence (COUNT_ATTEMPT: one update of the event that changes no
           indexed column, not waiting for its flush), with no status change and no timeline.

Otherwise no HTTP, no tokens, no Dramatiq envelope, no handler: the physical limit of this
machine for seriatim's per-event work. A scratch database from schema.sql (dropped
afterwards), the real queue arguments; only loopback traffic; bounded by the counts given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import pika
from rig import (
    cpu_by_part,
    load_average,
    machine_busy,
    open_loop,
    parts_since,
    post_events,
    summary,
    write_results,
)

from actors.amqp import CoalescingConnection
from actors.broker import mailbox_arguments
from actors.settings import Settings
from actors.store.journal import AcceptRequest
from actors.store.queries import QUERIES
from tests import harness

NO_CAP = 2**62  # accept_event's backlog and quota bounds when none applies
RAW_EPOCH = 1  # the placement every raw client's mailbox is under (the fences check it)
PAYLOAD = '{"n": 1}'
# The fenced outcome for one event (the single-row form of queries.sql's record_outcomes):
# the raw baseline does the per-event I/O, one statement and one commit per event.
RECORD_OUTCOME = """
WITH fence AS (
    UPDATE clients SET done_seq = $3 WHERE id = $2 AND done_seq = $3 - 1
    RETURNING id
)
UPDATE events
SET status = $4, attempts = $5, result = $6::jsonb, error = $7::jsonb, finished_at = now(),
    started_at = coalesce(started_at, now())
WHERE id = $1 AND EXISTS (SELECT 1 FROM fence)
RETURNING finished_at
"""


# The least a worker can write before a handler runs and still keep exclusion and counted
# attempts: the attempt counted, under the placement's fence (the epoch), not waiting for its
# flush, as mark_attempts does, but with no status change (so no index entry: a HOT update)
# and no timeline row.
COUNT_ATTEMPT = """
WITH unflushed AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE events e SET attempts = e.attempts + 1, started_at = coalesce(e.started_at, now())
WHERE e.id = $1 AND (SELECT setting FROM unflushed) IS NOT NULL
  AND EXISTS (SELECT 1 FROM clients c
              WHERE c.id = e.client_id AND c.state = 'active' AND c.epoch = $2)
RETURNING e.attempts
"""


class Amqp:
    """One pika asyncio connection and channel: declare, confirmed publish, consume, ack."""

    def __init__(self, connection: CoalescingConnection, channel: Any) -> None:
        self.connection, self.channel = connection, channel
        self.loop = asyncio.get_running_loop()
        self.confirms: dict[int, asyncio.Future[None]] = {}
        self.tag = 0

    @classmethod
    async def open(cls, url: str) -> Amqp:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Any] = loop.create_future()
        # The system's connection class: the frames of one loop turn go out in one write.
        CoalescingConnection(
            pika.URLParameters(url),
            on_open_callback=opened.set_result,
            on_open_error_callback=lambda _c, e: opened.set_exception(RuntimeError(str(e))),
            custom_ioloop=loop,
        )
        connection = await opened
        channel: asyncio.Future[Any] = loop.create_future()
        connection.channel(on_open_callback=channel.set_result)
        return cls(connection, await channel)

    async def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        method(*args, callback=future.set_result, **kwargs)
        return await future

    async def enable_confirms(self) -> None:
        await self.call(self.channel.confirm_delivery, self._confirmed)

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        tags = (
            [t for t in self.confirms if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            future = self.confirms.pop(tag)
            if isinstance(method, pika.spec.Basic.Ack):
                future.set_result(None)
            else:
                future.set_exception(RuntimeError("nacked"))

    def publish(self, queue: str, body: bytes, message_id: str) -> asyncio.Future[None]:
        properties = pika.BasicProperties(
            message_id=message_id, delivery_mode=2, content_type="application/json"
        )
        self.channel.basic_publish("", queue, body, properties, mandatory=True)
        self.tag += 1
        future: asyncio.Future[None] = self.loop.create_future()
        self.confirms[self.tag] = future
        return future

    async def declare(self, queues: list[str], arguments: dict[str, Any]) -> None:
        for start in range(0, len(queues), 500):
            await asyncio.gather(
                *(
                    self.call(self.channel.queue_declare, q, durable=True, arguments=arguments)
                    for q in queues[start : start + 500]
                )
            )

    def declare_nowait(self, queue: str, arguments: dict[str, Any]) -> None:
        """queue.declare with AMQP's no-wait bit (pika sets it when no callback is given), as
        the gateway declares: no answer, the channel is not held; the broker handles a
        channel's methods in order, so a publish sent next finds the queue."""
        self.channel.queue_declare(queue, durable=True, arguments=arguments)

    async def delete(self, queues: list[str]) -> None:
        for start in range(0, len(queues), 500):
            await asyncio.gather(
                *(self.call(self.channel.queue_delete, q) for q in queues[start : start + 500])
            )

    def close(self) -> None:
        self.connection.close()


class Intake:
    """The intake half of one event: the accept transaction, then a confirmed publish."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        amqp: Amqp,
        queues: dict[str, str],
        activate: dict[str, str] | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.pool, self.amqp, self.queues = pool, amqp, queues
        # On demand: a client's first event declares its queue, then asks the consumer that
        # owns it (`activate[cid]`, its control queue) to start consuming it.
        self.activate, self.arguments = dict(activate or {}), arguments or {}
        self.confirms: list[asyncio.Future[None]] = []
        # The row lock orders a client's accepts; this lock makes its publishes follow that
        # order (the system fills such gaps from the journal instead; a bare consumer cannot).
        self.locks = {cid: asyncio.Lock() for cid in queues}

    @classmethod
    async def open(
        cls,
        dsn: str,
        amqp_url: str,
        queues: dict[str, str],
        activate: dict[str, str] | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> Intake:
        pool = await asyncpg.create_pool(dsn, min_size=20, max_size=20)
        amqp = await Amqp.open(amqp_url)
        await amqp.enable_confirms()
        return cls(pool, amqp, queues, activate, arguments)

    async def accept(self, cid: str, payload: str = PAYLOAD) -> asyncpg.Record:
        """Commit the event and send its publish; `confirmed` awaits the broker's confirms.
        The accepted row (id, seq)."""
        async with self.locks[cid]:
            request = AcceptRequest(
                client_id=uuid.UUID(cid),
                type="demo.echo",
                payload=payload,
                idempotency_key=None,
                request_hash=None,
                redrive_of=None,
                traceparent=None,
                max_backlog=NO_CAP,
                max_stored_events=NO_CAP,
                max_stored_bytes=NO_CAP,
            )
            row = await self.pool.fetchrow(QUERIES["accept_event"], *request.params())
            body = json.dumps({"event_id": str(row["id"]), "client_id": cid, "seq": row["seq"]})
            control = self.activate.pop(cid, None)
            if control is not None:
                self.amqp.declare_nowait(self.queues[cid], self.arguments)
            self.confirms.append(self.amqp.publish(self.queues[cid], body.encode(), str(row["id"])))
            if control is not None:
                wake = self.queues[cid].encode()
                self.confirms.append(self.amqp.publish(control, wake, f"activate-{cid}"))
            return row

    async def confirmed(self) -> None:
        await asyncio.gather(*self.confirms)

    async def close(self) -> None:
        self.amqp.close()
        await self.pool.close()


async def produce(
    dsn: str,
    amqp_url: str,
    queues: dict[str, str],
    per_client: int,
    concurrency: int,
    activate: dict[str, str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accept and publish `per_client` events per client, clients interleaved."""
    intake = await Intake.open(dsn, amqp_url, queues, activate, arguments)
    pending = [cid for _ in range(per_client) for cid in queues]
    pending.reverse()
    latencies: list[float] = []

    async def task() -> None:
        while pending:
            cid = pending.pop()
            began = time.perf_counter()
            await intake.accept(cid)
            latencies.append(time.perf_counter() - began)

    try:
        started = time.monotonic()
        await asyncio.gather(*(task() for _ in range(concurrency)))
        accepted = time.monotonic()
        await intake.confirmed()
        confirmed = time.monotonic()
    finally:
        await intake.close()
    return {
        "started": started,
        "accepted_s": accepted - started,
        "confirmed_s": confirmed - started,
        "accept_latency_s": summary(latencies),
    }


def http_intake_process(
    dsn: str,
    amqp_url: str,
    queues: dict[str, str],
    activate: dict[str, str],
    arguments: dict[str, Any],
    port: int,
    confirmed: Any,
) -> None:
    """The intake behind HTTP (`--http`): POST /v1/events with the client's id as the bearer
    token; 202 with the event's id and seq once committed, as the gateway answers. Stops
    on SIGTERM; sets `confirmed` (an Event) once the broker confirmed every publish."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    intakes: list[Intake] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        intakes.append(await Intake.open(dsn, amqp_url, queues, activate, arguments))
        yield
        await intakes[0].confirmed()
        confirmed.set()
        await intakes[0].close()

    async def post_event(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        cid = request.headers["authorization"].removeprefix("Bearer ")
        row = await intakes[0].accept(cid, json.dumps(body["payload"]))
        return JSONResponse({"id": str(row["id"]), "seq": row["seq"]}, status_code=202)

    app = Starlette(routes=[Route("/v1/events", post_event, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


async def produce_http(
    dsn: str,
    amqp_url: str,
    queues: dict[str, str],
    per_client: int,
    concurrency: int,
    activate: dict[str, str] | None = None,
    arguments: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`produce` through http_intake_process: the same events, posted over HTTP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    confirmed = context.Event()
    server = context.Process(
        target=http_intake_process,
        args=(dsn, amqp_url, queues, activate or {}, arguments or {}, port, confirmed),
    )
    server.start()
    try:
        await asyncio.to_thread(
            harness.wait_for,
            lambda: _listening(port) or not server.is_alive(),
            60,
            "the HTTP intake to listen",
        )
        if not server.is_alive():
            raise RuntimeError(f"the HTTP intake did not start (exit code {server.exitcode})")
        # the server's start-up not counted
        busy, parts, started = machine_busy(), cpu_by_part(), time.monotonic()
        body = {"type": "demo.echo", "payload": json.loads(PAYLOAD)}
        latencies = await post_events(
            f"http://127.0.0.1:{port}", {cid: cid for cid in queues}, per_client, body, concurrency
        )
        accepted = time.monotonic()
    finally:
        server.terminate()  # uvicorn's graceful stop: the lifespan awaits the confirms
        await asyncio.to_thread(server.join, 60)
        if server.is_alive():
            server.kill()
            server.join()
    if not confirmed.is_set():  # uvicorn exits with -15 after a failed shutdown too
        raise RuntimeError(
            f"the HTTP intake stopped (exit code {server.exitcode}) before the broker "
            "confirmed every publish"
        )
    return {
        "started": started,
        "busy_at_start": busy,
        "parts_at_start": parts,
        "accepted_s": accepted - started,
        # Up to the last 202: the confirms are awaited as the server stops, which is not
        # timed (its stop would count); processed/s is the figure that compares.
        "confirmed_s": accepted - started,
        "accept_latency_s": summary(latencies),
    }


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def produce_paced(
    dsn: str, amqp_url: str, queues: dict[str, str], rate: float, count: int
) -> dict[str, Any]:
    """Open loop: `count` accepts at `rate` per second, clients in turn; each latency runs
    from the accept's scheduled time to its commit (where the gateway answers 202)."""
    intake = await Intake.open(dsn, amqp_url, queues)
    cids = list(queues)
    latencies: list[float] = []

    async def one(cid: str, due: float) -> None:
        await intake.accept(cid)
        latencies.append(time.perf_counter() - due)

    try:
        seconds = await open_loop(rate, count, lambda n, due: one(cids[n % len(cids)], due))
        achieved = count / seconds
        await intake.confirmed()
    finally:
        await intake.close()
    return {"rate_per_s": rate, "achieved_per_s": achieved, "accept_latency_s": summary(latencies)}


def consumer_process(
    dsn: str,
    amqp_url: str,
    queues: list[str],
    expected: int,
    ready: Any,
    out: Any,
    control: str | None = None,
    journal: bool = False,
    counted: bool = False,
) -> None:
    out.put(asyncio.run(consume(dsn, amqp_url, queues, expected, ready, control, journal, counted)))


async def consume(
    dsn: str,
    amqp_url: str,
    queues: list[str],
    expected: int,
    ready: Any,
    control: str | None = None,
    journal: bool = False,
    counted: bool = False,
) -> Any:
    """Prefetch-1 consumers on `queues`; each delivery: fenced outcome transaction, then ack
    (`journal`: seriatim's fenced attempt start, then its fenced outcome; `counted`: the
    attempt counted under the fence first).

    With a `control` queue (on demand), each queue is consumed only once its name arrives
    there, and cancelled once its `expected // len(queues)` events are settled."""
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    amqp = await Amqp.open(amqp_url)
    finished = asyncio.get_running_loop().create_future()
    state = {"done": 0, "refused": 0, "last": 0.0}
    per_queue = expected // max(1, len(queues))
    settled: dict[str, int] = defaultdict(int)
    consumer_tags: dict[str, str] = {}

    async def handle(tag: int, queue: str, body: bytes) -> None:
        message = json.loads(body)
        event_id, client_id = uuid.UUID(message["event_id"]), uuid.UUID(message["client_id"])
        if journal:  # the single-row forms: what a worker's batch of one runs
            await pool.fetch(QUERIES["mark_attempt"], event_id, RAW_EPOCH, True)
            recorded = await pool.fetchval(
                QUERIES["record_outcome"],
                event_id,
                client_id,
                message["seq"],
                "succeeded",
                1,
                PAYLOAD,
                None,
                RAW_EPOCH,
            )
        else:
            if counted:
                await pool.fetchval(COUNT_ATTEMPT, event_id, RAW_EPOCH)
            recorded = await pool.fetchval(
                RECORD_OUTCOME, event_id, client_id, message["seq"], "succeeded", 1, PAYLOAD, None
            )
        amqp.channel.basic_ack(tag)
        settled[queue] += 1
        if control is not None and settled[queue] == per_queue:  # passivate
            amqp.channel.basic_cancel(consumer_tags.pop(queue))
        state["refused" if recorded is None else "done"] += 1
        if state["done"] + state["refused"] == expected:
            state["last"] = time.monotonic()
            finished.set_result(None)

    tasks: set[asyncio.Task[None]] = set()

    def deliver(queue: str, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        task = asyncio.ensure_future(handle(method.delivery_tag, queue, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def activate(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
        queue = body.decode()
        consumer_tags[queue] = amqp.channel.basic_consume(queue, partial(deliver, queue))
        amqp.channel.basic_ack(method.delivery_tag)

    if control is not None:  # before basic.qos: the control consumer has no prefetch limit
        await amqp.call(amqp.channel.basic_consume, control, activate)
    await amqp.call(amqp.channel.basic_qos, prefetch_count=1, global_qos=False)
    for start in range(0, len(queues) if control is None else 0, 500):
        await asyncio.gather(
            *(
                amqp.call(amqp.channel.basic_consume, q, partial(deliver, q))
                for q in queues[start : start + 500]
            )
        )
    ready.set()
    if expected:
        await finished
    amqp.close()
    await pool.close()
    return state


def run(
    clients: int,
    per_client: int,
    concurrency: int,
    consumers: int,
    full: bool,
    *,
    on_demand: bool = False,
    http: bool = False,
    journal: bool = False,
    counted: bool = False,
) -> dict[str, Any]:
    """One baseline on a scratch database and namespace: `full` adds consume + outcome + ack.

    `on_demand` (with `full`): no queue exists and none is consumed before the clock starts;
    a client's first event declares its queue and has a consumer process start consuming it
    (through that process's control queue), and the consumer cancels once the client's
    events are done: the bare I/O of a mailbox activated for its events and passivated.
    `http`: the intake runs behind HTTP in a process of its own (produce_http).
    `journal` (with `full`): each delivery runs seriatim's attempt start and outcome;
    `counted`: the attempt counted under the fence (COUNT_ATTEMPT) before the outcome."""
    return _scratch(
        lambda dsn, settings: _run(
            dsn,
            settings,
            clients,
            per_client,
            concurrency,
            consumers,
            full,
            on_demand,
            http,
            journal,
            counted,
        )
    )


def run_in(
    dsn: str, clients: int, per_client: int, concurrency: int, consumers: int
) -> dict[str, Any]:
    """The per-event baseline (`run(..., full=True)`) on a database the caller made from
    schema.sql and drops (bench/journal_cost.py counts a private cluster's WAL around it)."""
    settings = Settings(namespace=harness.new_namespace())
    return asyncio.run(_run(dsn, settings, clients, per_client, concurrency, consumers, full=True))


def run_paced(clients: int, rate: float, count: int) -> dict[str, Any]:
    """The intake baseline as an open loop at `rate` (produce_paced), on a scratch database."""
    return _scratch(lambda dsn, settings: _run_paced(dsn, settings, clients, rate, count))


def _scratch(baseline: Callable[[str, Settings], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    harness.build_template()
    database = harness.create_database()
    settings = Settings(namespace=harness.new_namespace())
    try:
        return asyncio.run(baseline(harness.database_url(database), settings))
    finally:
        harness.drop_database(database)


async def _clients(connection: asyncpg.Connection, clients: int) -> list[str]:
    """The clients, each with its mailbox placed (active, under RAW_EPOCH), as a worker's
    statements need it for their fences."""
    rows = await connection.fetch(
        "INSERT INTO clients (name, secret_hash, state, host, epoch) "
        "SELECT 'raw-' || g, 'bench:no-secret', 'active', 'raw', $2 "
        "FROM generate_series(1, $1) AS g RETURNING id",
        clients,
        RAW_EPOCH,
    )
    return [str(r["id"]) for r in rows]


async def _run_paced(
    dsn: str, settings: Settings, clients: int, rate: float, count: int
) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    queues = {cid: settings.mailbox_queue(cid) for cid in await _clients(connection, clients)}
    admin = await Amqp.open(harness.AMQP_URL)
    try:
        await admin.declare(list(queues.values()), mailbox_arguments(settings))
        load_start = load_average()
        result = await produce_paced(dsn, harness.AMQP_URL, queues, rate, count)
        return result | {"load_average": {"start": load_start, "end": load_average()}}
    finally:
        await admin.delete(list(queues.values()))
        admin.close()
        await connection.close()


async def _run(
    dsn: str,
    settings: Settings,
    clients: int,
    per_client: int,
    concurrency: int,
    consumers: int,
    full: bool,
    on_demand: bool = False,
    http: bool = False,
    journal: bool = False,
    counted: bool = False,
) -> dict[str, Any]:
    on_demand = on_demand and full
    connection = await asyncpg.connect(dsn)
    queues = {cid: settings.mailbox_queue(cid) for cid in await _clients(connection, clients)}
    controls = [f"{settings.namespace}.raw-control.{n}" for n in range(consumers)]
    # On demand, each client's queue belongs to consumer n of the round robin below.
    activate = {cid: controls[n % consumers] for n, cid in enumerate(queues)} if on_demand else {}
    admin = await Amqp.open(harness.AMQP_URL)
    if on_demand:
        await admin.declare(controls, {})
    else:
        await admin.declare(list(queues.values()), mailbox_arguments(settings))
    processes, out = [], None
    load_start = load_average()
    try:
        if full:
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            for n in range(consumers):
                part = list(queues.values())[n::consumers]
                ready = context.Event()
                process = context.Process(
                    target=consumer_process,
                    args=(
                        dsn,
                        harness.AMQP_URL,
                        part,
                        len(part) * per_client,
                        ready,
                        out,
                        controls[n] if on_demand else None,
                        journal,
                        counted,
                    ),
                )
                process.start()
                processes.append(process)
                await asyncio.to_thread(ready.wait, 300)
        busy, parts = machine_busy(), cpu_by_part()
        intake = await (produce_http if http else produce)(
            dsn,
            harness.AMQP_URL,
            queues,
            per_client,
            concurrency,
            activate,
            mailbox_arguments(settings),
        )
        busy = intake.get("busy_at_start", busy)
        parts = intake.get("parts_at_start", parts)
        total = clients * per_client
        result: dict[str, Any] = {
            "clients": clients,
            "events": total,
            "concurrency": concurrency,
            "on_demand": on_demand,
            "http": http,
            "journal": journal,
            "counted": counted,
            "intake_per_s": total / intake["confirmed_s"],
            "accepted_per_s": total / intake["accepted_s"],
            "accept_latency_s": intake["accept_latency_s"],
        }
        if full and out is not None:
            states = [await asyncio.to_thread(out.get, True, 900) for _ in processes]
            busy = machine_busy() - busy
            by_part = parts_since(parts, total)
            last = max(s["last"] for s in states)
            rows = await connection.fetch(
                "SELECT extract(epoch FROM finished_at - accepted_at)::float AS s FROM events"
            )
            result |= {
                "consumers": consumers,
                "processed_per_s": total / (last - intake["started"]),
                "accepted_to_finished_s": summary([r["s"] for r in rows]),
                "fence_refusals": sum(s["refused"] for s in states),
                # Every process on the machine (PostgreSQL and RabbitMQ included).
                "machine_cpu_ms_per_event": busy * 1000 / total,
                "cpu_ms_per_event_by_part": by_part,
            }
        result["load_average"] = {"start": load_start, "end": load_average()}
        return result
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        await admin.delete(list(queues.values()) + (controls if on_demand else []))
        admin.close()
        await connection.close()


def print_result(title: str, result: dict[str, Any]) -> None:
    load = result["load_average"]
    line = (
        f"{title:24}{result['intake_per_s']:>10.0f}/s intake   accept p50 "
        f"{result['accept_latency_s']['p50'] * 1000:.1f} ms p99 "
        f"{result['accept_latency_s']['p99'] * 1000:.1f} ms"
    )
    if "processed_per_s" in result:
        a2f = result["accepted_to_finished_s"]
        line += (
            f"   {result['processed_per_s']:.0f}/s processed, accepted->finished p50 "
            f"{a2f['p50'] * 1000:.0f} ms p99 {a2f['p99'] * 1000:.0f} ms"
        )
    print(f"{line}   load {load['start']:.2f}->{load['end']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=50, help="events per client")
    parser.add_argument("--concurrency", type=int, default=64, help="accepts in flight")
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes")
    parser.add_argument(
        "--on-demand",
        action="store_true",
        help="per event: declare and consume each client's queue on its first event",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="per event: the intake behind HTTP in a process of its own, posted to over HTTP",
    )
    parser.add_argument(
        "--journal",
        action="store_true",
        help="per event: seriatim's fenced attempt start and fenced outcome statements",
    )
    parser.add_argument(
        "--counted",
        action="store_true",
        help="per event: the attempt counted under the placement's fence before the outcome",
    )
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 20000
        and 1 <= args.events <= 10000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.consumers <= 16
    ):
        parser.error("counts out of range")
    counts = (args.clients, args.events, args.concurrency, args.consumers)
    intake = run(*counts, full=False)
    print_result("raw intake", intake)
    full = run(
        *counts,
        full=True,
        on_demand=args.on_demand,
        http=args.http,
        journal=args.journal,
        counted=args.counted,
    )
    title = "raw per event" + (", on demand" if args.on_demand else "")
    title += ", seriatim's statements" if args.journal else ""
    title += ", attempts counted" if args.counted else ""
    print_result(title + (", over HTTP" if args.http else ""), full)
    print(f"results: {write_results('raw', {'intake': intake, 'per_event': full})}")


if __name__ == "__main__":
    main()
