"""Redrive by filter in the console: a preview count first, then a job whose progress the page
follows; the events go to their clients' tails in `seq` order (gateway/operations.py). Jobs
live in the gateway that runs them, and are forgotten when it stops."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import secrets
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import operations
from gateway.console.guard import Console
from gateway.console.sessions import Session
from gateway.console.tape import parse_id
from gateway.console.views import redirect
from gateway.operations import DeadFilter
from gateway.problems import Problem
from gateway.services import services_of

KEEP_JOBS = 100


@dataclasses.dataclass
class Job:
    id: str
    actor: uuid.UUID
    total: int
    done: int = 0
    finished: bool = False
    error: str | None = None


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
    jobs: dict[str, Job] = {}
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
        job = Job(secrets.token_urlsafe(12), session.client_id, len(events))
        while len(jobs) >= KEEP_JOBS:
            del jobs[next(iter(jobs))]
        jobs[job.id] = job

        async def run() -> None:
            def advance(done: int) -> None:
                job.done = done

            try:
                await operations.redrive_matching(services, session.client_id, events, advance)
            except Exception as error:  # shown on the job's page; the rest is in the log
                job.error = type(error).__name__
                raise
            finally:
                job.finished = True

        task = asyncio.create_task(run())
        running.add(task)
        task.add_done_callback(running.discard)
        return redirect(f"/console/redrive/jobs/{job.id}")

    async def progress(request: Request, session: Session) -> Response:
        job = jobs.get(request.path_params["job_id"])
        if job is None or job.actor != session.client_id:
            raise Problem(404, "not-found", "no such redrive job (jobs live in one gateway)")
        template = (
            "redrive_live.html" if request.query_params.get("fragment") else "redrive_job.html"
        )
        return console.render(request, template, session, job=job)

    return [
        Route("/redrive", page(preview), methods=["GET"]),
        Route("/redrive", action(start), methods=["POST"]),
        Route("/redrive/jobs/{job_id}", page(progress), methods=["GET"]),
    ]
