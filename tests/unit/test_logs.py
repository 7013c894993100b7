"""Log lines: JSON by default with trace and event context, readable text on request."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import uuid
from collections.abc import Iterator
from typing import TextIO

import pytest
from opentelemetry.sdk.trace import TracerProvider

from actors import logs
from actors.settings import Settings, SettingsError

CLIENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000001")
EVENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000002")


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    stream = io.StringIO()
    logger = logging.getLogger("seriatim.test")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield stream, logger
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_json_line_has_the_standard_fields(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.JsonFormatter("worker"))

    logger.warning("event seq %d is dead", 7)

    line = json.loads(lines(stream)[0])
    assert line["level"] == "WARNING"
    assert line["logger"] == "seriatim.test"
    assert line["message"] == "event seq 7 is dead"
    assert line["process"] == "worker"
    assert line["timestamp"].endswith("Z")
    assert "trace_id" not in line  # outside any span
    assert "client_id" not in line


def test_a_json_line_carries_the_span_and_the_bound_event(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.JsonFormatter("worker"))
    tracer = TracerProvider().get_tracer("test")

    with tracer.start_as_current_span("work") as span, logs.bound(client_id=CLIENT):
        with logs.bound(event_id=EVENT):
            logger.info("inside")
        logger.info("after the event")
    logger.info("outside")

    inside, after, outside = (json.loads(line) for line in lines(stream))
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert (inside["client_id"], inside["event_id"]) == (str(CLIENT), str(EVENT))
    assert after["client_id"] == str(CLIENT)
    assert "event_id" not in after
    assert not {"trace_id", "client_id", "event_id"} & set(outside)


def test_an_exception_is_one_json_line(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.JsonFormatter("gateway"))

    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logger.exception("failed")

    [line] = lines(stream)
    assert "ZeroDivisionError: boom" in json.loads(line)["exception"]


def test_the_console_format_is_readable_text(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.ConsoleFormatter("up"))

    with logs.bound(client_id=CLIENT):
        logger.info("mailbox active")

    [line] = lines(stream)
    assert " INFO    up[" in line
    assert line.endswith(f"seriatim.test: mailbox active  client={CLIENT}")


def test_an_unknown_log_format_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="SERIATIM_LOG_FORMAT must be auto, json or console"):
        Settings.from_env({"SERIATIM_LOG_FORMAT": "xml"})


def test_the_default_log_format_chooses_by_the_output() -> None:
    assert Settings.from_env({}).log_format == "auto"


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The writing end of a real pseudo-terminal, as stdout is when a person runs seriatim."""
    leader, follower = pty.openpty()
    with open(follower, "w", encoding="utf-8") as stream:
        yield stream
    os.close(leader)


@pytest.fixture
def pipe() -> Iterator[TextIO]:
    reading, writing = os.pipe()
    with open(writing, "w", encoding="utf-8") as stream:
        yield stream
    os.close(reading)


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def formatter_for(fmt: str, stream: TextIO) -> logging.Formatter | None:
    logs.configure("INFO", "gateway", fmt, stream)
    return logging.getLogger().handlers[0].formatter


@pytest.mark.usefixtures("restored_root")
def test_auto_is_readable_on_a_terminal_and_json_elsewhere(terminal: TextIO, pipe: TextIO) -> None:
    """Before `auto`, a gateway or worker at a terminal wrote JSON (only `up` switched)."""
    assert isinstance(formatter_for("auto", terminal), logs.ConsoleFormatter)
    assert isinstance(formatter_for("auto", pipe), logs.JsonFormatter)


@pytest.mark.usefixtures("restored_root")
def test_a_forced_format_wins_over_the_terminal(terminal: TextIO, pipe: TextIO) -> None:
    assert isinstance(formatter_for("json", terminal), logs.JsonFormatter)
    assert isinstance(formatter_for("console", pipe), logs.ConsoleFormatter)


def test_colour_only_on_a_terminal_and_never_with_no_color(terminal: TextIO, pipe: TextIO) -> None:
    assert logs.coloured(terminal, {})
    assert logs.coloured(terminal, {"NO_COLOR": ""})  # no-color.org: empty means unset
    assert not logs.coloured(terminal, {"NO_COLOR": "1"})
    assert not logs.coloured(pipe, {})


def test_a_coloured_line_colours_the_level_and_keeps_the_fields(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.ConsoleFormatter("worker", colour=True))

    with logs.bound(client_id=CLIENT, event_id=EVENT):
        logger.error("event failed")

    [line] = lines(stream)
    assert "\x1b[31mERROR\x1b[0m   worker[" in line
    assert line.endswith(f"seriatim.test: event failed  client={CLIENT} event={EVENT}")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", line)


def test_a_plain_console_line_has_no_escape_codes(
    captured: tuple[io.StringIO, logging.Logger],
) -> None:
    stream, logger = captured
    logger.handlers[0].setFormatter(logs.ConsoleFormatter("worker"))

    logger.error("event failed")

    assert "\x1b" not in stream.getvalue()
