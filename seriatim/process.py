"""The process tree of `seriatim up`: a gateway and N workers, restarted when they die."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys

from prometheus_client import CONTENT_TYPE_LATEST

from actors.backoff import Backoff
from actors.metrics import Render, serve_metrics
from actors.settings import Settings
from seriatim import federation

log = logging.getLogger("seriatim.up")

STOP_DEADLINE = 45.0


class Child:
    """One child process, started again with backoff whenever it exits unasked."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.process: asyncio.subprocess.Process | None = None
        self._backoff = Backoff(min=0.5, max=30.0, jitter=0.2)

    async def keep_running(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            self.process = await asyncio.create_subprocess_exec(*self.argv)
            log.info("%s started (pid %d)", self.name, self.process.pid)
            waiting = asyncio.ensure_future(self.process.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([waiting, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if stopping.is_set():
                await self.stop(waiting)
                return
            failures += 1
            delay = self._backoff.delay(min(failures, 10))
            log.error(
                "%s exited with %s; restarting in %.1f s", self.name, self.process.returncode, delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    async def stop(self, waiting: asyncio.Future[int]) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), STOP_DEADLINE)
        except TimeoutError:
            log.error("%s did not stop within %.0f s; killing it", self.name, STOP_DEADLINE)
            process.kill()
            await waiting
        code = process.returncode
        clean = code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped on
        log.info("%s stopped%s", self.name, "" if clean else f" (exit {code})")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _serve_all_metrics(host: str, port: int, stopping: asyncio.Event, render: Render) -> None:
    """The one metrics endpoint; a port in use costs the endpoint, never the system."""
    try:
        await serve_metrics(host, port, stopping, render)
    except OSError as error:
        log.error("cannot serve metrics on %s:%d (%s); running without", host, port, error)


async def run_up(settings: Settings, workers: int, metrics_port: int | None = None) -> int:
    """Run the gateway and `workers` workers until SIGINT or SIGTERM; with `metrics_port`,
    serve all their metrics on that one port."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    command = [sys.executable, "-m", "seriatim"]
    host = settings.http_host
    targets = {"gateway": f"http://{host}:{settings.http_port}/metrics"}
    children = [Child("gateway", [*command, "gateway"])]
    for n in range(1, workers + 1):
        port = _free_port(host)
        targets[f"worker-{n}"] = f"http://{host}:{port}/metrics"
        children.append(Child(f"worker-{n}", [*command, "worker", "--metrics-port", str(port)]))
    log.info(
        "seriatim up: gateway on http://%s:%d, %d workers; Ctrl-C stops",
        settings.http_host,
        settings.http_port,
        workers,
    )

    async def render(accept: str | None) -> tuple[bytes, str]:
        return await federation.scrape(targets), CONTENT_TYPE_LATEST

    async with asyncio.TaskGroup() as tasks:
        for child in children:
            tasks.create_task(child.keep_running(stopping))
        if metrics_port is not None:
            tasks.create_task(_serve_all_metrics(host, metrics_port, stopping, render))
    log.info("seriatim stopped")
    return 0
