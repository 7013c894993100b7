"""How console pages are made: Jinja2 templates with autoescape on, the headers every console
answer carries (a strict Content-Security-Policy: scripts and styles only from /console/static),
form bodies, and the filters the templates use."""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway import intake
from gateway.problems import Problem
from gateway.services import services_of

FORM_LIMIT = 16 * 1024  # bytes of a console form
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make the browser send `Origin: null`
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def ago(moment: datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """'3 s', '4 min', '2 h', '5 d' since `moment`; '' for None."""
    if moment is None:
        return ""
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def moment(value: datetime.datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_text(value: str | None) -> str:
    """An error's message from its JSON text (`{"type", "message"}`), else the text itself."""
    if not value:
        return ""
    try:
        error = json.loads(value)
    except ValueError:
        return value
    if isinstance(error, dict):
        kind, message = error.get("type", ""), error.get("message", "")
        return f"{kind}: {message}" if kind else str(message or value)
    return str(error)


def duration(start: datetime.datetime | None, end: datetime.datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds() * 1000:.0f} ms"


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=ago, moment=moment, error_text=error_text)
    env.globals.update(duration=duration)
    return env


class Pages:
    """Renders templates into answers with the console's headers."""

    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site: `Origin`, or `Referer`
    when there is no `Origin` (compared by host only: a proxy in front may terminate TLS);
    true when it says neither."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body; raises Problem 400/413/415 for anything else."""
    if not same_origin(request):
        raise Problem(403, "cross-site", "this form was sent from another site")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Problem(415, "unsupported-media-type", "a console form is urlencoded")
    # Console forms come before any bearer token, so their bodies are time-boxed like the
    # token endpoint's: a slow drip cannot hold a pre-authentication slot for long.
    settings = services_of(request).settings
    body = await intake.read_body(
        request, settings, limit=FORM_LIMIT, within=settings.preauth_body_timeout
    )
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "invalid-form", "the form body is malformed") from None
    return {name: values[-1] for name, values in fields.items()}
