"""Redrive by filter in the console: a preview count first, then a job whose progress the page
follows; the events go to their clients' tails in `seq` order (gateway/operations.py).

A job is run by the gateway that started it and kept in the journal (actors/store/redrives.py):
the runner reports its progress every REPORT_EVERY seconds, so any gateway shows it. A job not
reported on for SILENT_AFTER seconds (its gateway died or froze) is marked interrupted by the
next reader, with the progress last reported; its runner, if alive, stops at its next report.
The rest is redriven by running the same filter again: each event is redriven at most once,
so nothing is redriven twice (docs/decisions.md "Redrive jobs: interrupted, not resumed")."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import socket

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors.store.redrives import RedriveJobs
from gateway import operations
from gateway.console.guard import Console
from gateway.console.sessions import Session
from gateway.console.tape import parse_id
from gateway.console.views import redirect
from gateway.operations import DeadFilter
from gateway.problems import Problem
from gateway.services import services_of

log = logging.getLogger(__name__)

#: How often a running job's gateway reports its progress, and how long a silent one is
#: taken for running (then it is marked interrupted).
REPORT_EVERY = 1.0
SILENT_AFTER = 10.0
#: The gateway a job runs in, as its page names it.
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass
class _Progress:
    processed: int = 0
    redriven: int = 0


def _moment(text: str, name: str) -> datetime.datetime | None:
    """A `datetime-local` field's value, read as UTC; None when empty."""
    if not text.strip():
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise Problem(400, "invalid-query", f"{name} must be a date and time") from None
    return moment.replace(tzinfo=moment.tzinfo or datetime.UTC)


def dead_filter(fields: dict[str, str]) -> DeadFilter:
    client_text = fields.get("client_id", "").strip()
    client_id = parse_id(client_text) if client_text else None
    if client_text and client_id is None:
        raise Problem(400, "invalid-query", "client must be a client id")
    return DeadFilter(
        client_id,
        _moment(fields.get("since", ""), "since"),
        _moment(fields.get("until", ""), "until"),
    )


def redrive_routes(console: Console) -> list[BaseRoute]:
    page, action = console.page(operator=True), console.action(operator=True)
    running: set[asyncio.Task[None]] = set()

    async def preview(request: Request, session: Session) -> Response:
        fields = dict(request.query_params)
        which = dead_filter(fields)
        count = None
        if fields.get("preview"):
            count = len(await operations.dead_matching(services_of(request), which))
        return console.render(
            request,
            "redrive.html",
            session,
            fields=fields,
            count=count,
            limit=operations.MAX_REDRIVE,
        )

    async def start(request: Request, session: Session, fields: dict[str, str]) -> Response:
        services = services_of(request)
        events = await operations.dead_matching(services, dead_filter(fields))
        store = RedriveJobs(services.journal.pool)
        job = await store.create(session.client_id, RUNNER, len(events))
        progress = _Progress()

        def advance(done: int) -> None:
            progress.processed += 1
            progress.redriven = done

        async def run() -> None:
            work = asyncio.create_task(
                operations.redrive_matching(services, session.client_id, events, advance)
            )
            try:
                while not work.done():
                    await asyncio.wait({work}, timeout=REPORT_EVERY)
                    if work.done():
                        break
                    if not await store.report(job.id, progress.processed, progress.redriven):
                        log.warning("redrive job %s was marked interrupted: stopping it", job.id)
                        work.cancel()
                        return
                await work
            except asyncio.CancelledError:  # the gateway stops: say how far the job got
                work.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        store.finish(
                            job.id,
                            progress.processed,
                            progress.redriven,
                            "interrupted",
                            "its gateway stopped",
                        )
                    )
                raise
            except Exception as error:  # shown on the job's page; the rest is in the log
                work.cancel()  # a failed report (the journal unreachable) stops the job too
                await store.finish(
                    job.id, progress.processed, progress.redriven, "failed", type(error).__name__
                )
                raise
            else:
                await store.finish(job.id, progress.processed, progress.redriven, "finished", None)

        task = asyncio.create_task(run())
        running.add(task)
        task.add_done_callback(running.discard)
        return redirect(f"/console/redrive/jobs/{job.id}")

    async def progress(request: Request, session: Session) -> Response:
        job_id = parse_id(request.path_params["job_id"])
        store = RedriveJobs(services_of(request).journal.pool)
        job = await store.get(job_id, SILENT_AFTER) if job_id else None
        if job is None or job.actor != session.client_id:
            raise Problem(404, "not-found", "no such redrive job")
        template = (
            "redrive_live.html" if request.query_params.get("fragment") else "redrive_job.html"
        )
        return console.render(request, template, session, job=job)

    return [
        Route("/redrive", page(preview), methods=["GET"]),
        Route("/redrive", action(start), methods=["POST"]),
        Route("/redrive/jobs/{job_id}", page(progress), methods=["GET"]),
    ]
