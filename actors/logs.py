"""Log configuration shared by every seriatim process: one line per record on stdout, as
JSON (the default, for log pipelines) or as readable text (`SERIATIM_LOG_FORMAT=console`).

Each record carries the current trace and span ids, and the client and event it concerns
where the code knows them (`bound(...)`), so a log line leads to its trace in Jaeger.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from actors import tracing

FORMATS = ("json", "console")

_CONTEXT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "seriatim_log_context", default=()
)


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add these fields (client_id, event_id) to every record logged inside the block."""
    merged = dict(_CONTEXT.get()) | {key: str(value) for key, value in fields.items()}
    token = _CONTEXT.set(tuple(merged.items()))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: object) -> None:
    """Add these fields to every record logged from here to the end of the current task's
    context (an HTTP request's, in the gateway: each request runs in a task of its own)."""
    merged = dict(_CONTEXT.get()) | {key: str(value) for key, value in fields.items()}
    _CONTEXT.set(tuple(merged.items()))


def _context(record: logging.LogRecord) -> dict[str, str]:
    fields = dict(_CONTEXT.get())
    ids = tracing.current_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    for name in ("client_id", "event_id"):
        value = getattr(record, name, None)  # logger.info(..., extra={"client_id": ...})
        if value is not None:
            fields[name] = str(value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, process, the trace and
    span ids, client_id and event_id where known, and the exception if there is one."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self._role,
            "pid": record.process,
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """`time level role[pid] logger: message  client=… event=… trace=…` for people."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {role}[%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _context(record)
        fields.pop("span_id", None)
        if not fields:
            return text
        suffix = " ".join(f"{key.removesuffix('_id')}={value}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")  # keep a traceback below the fields
        return f"{head}  {suffix}{newline}{rest}"


def configure(level: str = "INFO", role: str = "seriatim", fmt: str = "json") -> None:
    """Send log records to stdout in the format `fmt` (json or console)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ConsoleFormatter(role) if fmt == "console" else JsonFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "dramatiq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, seven lines each; BrokerLink says
    # what matters (unreachable, reconnected) once.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
