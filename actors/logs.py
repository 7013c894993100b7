"""Log configuration shared by every seriatim process: one line per record on stdout, as
readable text when stdout is a terminal and as JSON (for log pipelines) when it is not;
`SERIATIM_LOG_FORMAT=json` or `console` forces one. The level is coloured only on a terminal,
and never when `NO_COLOR` is set (https://no-color.org).

Each record carries the current trace and span ids, and the client and event it concerns
where the code knows them (`bound(...)`), so a log line leads to its trace in Jaeger.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from actors import tracing

FORMATS = ("auto", "json", "console")
#: ANSI colours of the level names, as uvicorn's console logs have them.
LEVEL_COLOURS = {
    "DEBUG": "36",
    "INFO": "32",
    "WARNING": "33",
    "ERROR": "31",
    "CRITICAL": "1;31",
}

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
    """`time level role[pid] logger: message  client=… event=… trace=…` for people; the level
    in colour when `colour` is true."""

    def __init__(self, role: str, colour: bool = False) -> None:
        super().__init__(
            f"%(asctime)s.%(msecs)03d %(levelname)s {role}[%(process)d] %(name)s: %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
        )
        self._colour = colour

    def formatMessage(self, record: logging.LogRecord) -> str:
        level = record.levelname
        padded = f"{level:<7}"
        if self._colour and level in LEVEL_COLOURS:
            padded = f"\x1b[{LEVEL_COLOURS[level]}m{level}\x1b[0m{padded[len(level) :]}"
        return super().formatMessage(
            logging.makeLogRecord({**record.__dict__, "levelname": padded})
        )

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _context(record)
        fields.pop("span_id", None)
        if not fields:
            return text
        suffix = " ".join(f"{key.removesuffix('_id')}={value}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")  # keep a traceback below the fields
        return f"{head}  {suffix}{newline}{rest}"


def readable(fmt: str, stream: TextIO) -> bool:
    """Whether lines to `stream` are console text: `console`, or `auto` on a terminal."""
    return fmt == "console" or (fmt == "auto" and stream.isatty())


def coloured(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set to anything but ''."""
    return stream.isatty() and not environ.get("NO_COLOR")


def configure(
    level: str = "INFO", role: str = "seriatim", fmt: str = "auto", stream: TextIO | None = None
) -> None:
    """Send log records to `stream` (stdout) in the format `fmt` (auto, json or console)."""
    out = stream or sys.stdout
    handler = logging.StreamHandler(out)
    if readable(fmt, out):
        handler.setFormatter(ConsoleFormatter(role, colour=coloured(out)))
    else:
        handler.setFormatter(JsonFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncio", "dramatiq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, seven lines each; BrokerLink says
    # what matters (unreachable, reconnected) once.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
