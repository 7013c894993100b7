"""The handler registry, how handlers are called and loaded, and the demo handlers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from actors import demo
from actors.handlers import Event, HandlerRegistry, load_handlers, registry


def event(payload: Any = None, *, type_: str = "t", attempt: int = 1) -> Event:
    return Event(uuid.uuid4(), uuid.uuid4(), 1, type_, payload, attempt)


async def async_echo(event: Event) -> Any:
    return event.payload


def plain_echo(event: Event) -> Any:
    return event.payload


# --- the registry --------------------------------------------------------------------------


def test_registered_handler_is_found_by_type() -> None:
    handlers = HandlerRegistry()

    handlers.register("app.order-placed", async_echo)

    assert handlers.get("app.order-placed") is async_echo
    assert "app.order-placed" in handlers
    assert handlers.types() == ["app.order-placed"]


def test_unknown_type_has_no_handler() -> None:
    handlers = HandlerRegistry()

    assert handlers.get("app.nothing") is None
    assert "app.nothing" not in handlers


def test_registering_the_same_function_twice_is_harmless() -> None:
    handlers = HandlerRegistry()

    handlers.register("t", async_echo)
    handlers.register("t", async_echo)

    assert handlers.get("t") is async_echo


def test_registering_a_different_function_for_a_taken_type_raises() -> None:
    handlers = HandlerRegistry()
    handlers.register("t", async_echo)

    with pytest.raises(ValueError, match="already registered"):
        handlers.register("t", plain_echo)

    assert handlers.get("t") is async_echo


@pytest.mark.parametrize("type_", ["a", "demo.echo", "ns:Type_v2-x", "x" * 200])
def test_valid_type_names_are_accepted(type_: str) -> None:
    handlers = HandlerRegistry()

    handlers.register(type_, async_echo)

    assert type_ in handlers


@pytest.mark.parametrize("type_", ["", ".leading-dot", "-x", "has space", "x" * 201, "a/b", "é"])
def test_invalid_type_names_raise(type_: str) -> None:
    with pytest.raises(ValueError, match="handler type"):
        HandlerRegistry().register(type_, async_echo)


def test_type_name_with_a_trailing_newline_raises() -> None:
    with pytest.raises(ValueError, match="handler type"):
        HandlerRegistry().register("demo.echo\n", async_echo)


# --- loading handlers ----------------------------------------------------------------------


def test_load_handlers_registers_the_demo_handlers() -> None:
    loaded = load_handlers([])

    assert loaded is registry
    assert loaded.get("demo.echo") is demo.echo
    assert loaded.get("demo.sleep") is demo.sleep
    assert loaded.get("demo.fail") is demo.fail


def test_load_handlers_imports_named_modules() -> None:
    assert "demo.echo" in load_handlers(["json", "actors.demo"])


def test_load_handlers_names_a_module_that_cannot_be_imported() -> None:
    with pytest.raises(ImportError, match=r"'seriatim_tests\.no_such_module'"):
        load_handlers(["json", "seriatim_tests.no_such_module"])


# --- the demo handlers ---------------------------------------------------------------------


async def test_echo_returns_the_payload() -> None:
    payload = {"text": "hi", "n": [1, 2]}

    assert await demo.echo(event(payload)) == payload


@pytest.mark.parametrize("times", [1, 3])
async def test_fail_fails_its_first_attempts_then_succeeds(times: int) -> None:
    for attempt in range(1, times + 1):
        with pytest.raises(RuntimeError, match=f"attempt {attempt} of {times}"):
            await demo.fail(event({"times": times}, attempt=attempt))

    result = await demo.fail(event({"times": times}, attempt=times + 1))

    assert result == {"failed_attempts": times}


async def test_fail_fails_once_by_default() -> None:
    with pytest.raises(RuntimeError):
        await demo.fail(event({}, attempt=1))

    assert await demo.fail(event({}, attempt=2)) == {"failed_attempts": 1}


async def test_fail_with_zero_times_succeeds_at_once() -> None:
    assert await demo.fail(event({"times": 0})) == {"failed_attempts": 0}


@pytest.mark.parametrize("payload", [{"times": -1}, {"times": True}, {"times": "2"}, [], "x"])
async def test_fail_rejects_a_bad_payload(payload: Any) -> None:
    with pytest.raises(ValueError, match=r"demo\.fail wants"):
        await demo.fail(event(payload))


async def test_sleep_of_zero_ms_returns_at_once() -> None:
    assert await demo.sleep(event({"ms": 0})) == {"slept_ms": 0}


async def test_sleep_without_ms_sleeps_zero() -> None:
    assert await demo.sleep(event({})) == {"slept_ms": 0}


@pytest.mark.parametrize(
    "payload",
    [
        {"ms": -1},
        {"ms": 3_600_001},
        {"ms": True},
        {"ms": "10"},
        {"ms": None},
        {"ms": float("nan")},
        {"ms": float("inf")},
        [0],
        None,
    ],
)
async def test_sleep_rejects_a_bad_payload(payload: Any) -> None:
    with pytest.raises(ValueError, match=r"demo\.sleep wants"):
        await demo.sleep(event(payload))
