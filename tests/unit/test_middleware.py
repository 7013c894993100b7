"""SERIATIM_MIDDLEWARE: loading the middleware named, and Dramatiq's hooks around an attempt."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, MiddlewareError, SkipMessage

from actors.execution import AttemptFailed, Outcome, failure
from actors.middleware import AttemptHooks, load_middleware
from actors.settings import Settings, SettingsError
from seriatim.worker import run_worker

#: An instance, for the dotted-path test that names one.
CURRENT = CurrentMessage()


class Recorder(dramatiq.Middleware):
    """Writes down the hooks it receives; raises `raises` from before_process_message."""

    def __init__(self, raises: BaseException | None = None, fails: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.raises = raises
        self.fails = fails

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.calls.append(("before", None))
        if self.fails:
            message.fail()
        if self.raises is not None:
            raise self.raises

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.calls.append(("after", exception if exception is not None else result))

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.calls.append(("skip", None))


class NeedsArguments(dramatiq.Middleware):
    def __init__(self, limit: int) -> None:
        self.limit = limit


def envelope() -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={}, message_id="m-1"
    )


def hooks(*middleware: dramatiq.Middleware) -> AttemptHooks:
    return AttemptHooks(StubBroker(middleware=list(middleware)))


async def returns(outcome: Outcome) -> Outcome:
    return outcome


async def test_a_successful_attempt_is_wrapped_in_before_and_after_with_its_result() -> None:
    recorder = Recorder()

    outcome = await hooks(recorder).around(envelope(), lambda: returns(Outcome(True, 42)))

    assert outcome == Outcome(True, 42)
    assert recorder.calls == [("before", None), ("after", 42)]


async def test_a_failed_attempt_hands_the_handlers_own_exception_to_after() -> None:
    recorder = Recorder()
    raised = ValueError("boom")

    await hooks(recorder).around(envelope(), lambda: returns(failure("ValueError", "boom", raised)))

    assert recorder.calls[1] == ("after", raised)


async def test_a_failure_that_raised_nothing_hands_an_attempt_failed_naming_it() -> None:
    recorder = Recorder()

    await hooks(recorder).around(envelope(), lambda: returns(failure("HandlerTimeout", "slow")))

    exception = recorder.calls[1][1]
    assert isinstance(exception, AttemptFailed)
    assert exception.kind == "HandlerTimeout"


async def test_skip_message_skips_the_call_and_ends_the_event_at_once() -> None:
    recorder = Recorder(raises=SkipMessage("too old"))

    outcome = await hooks(recorder).around(envelope(), never_called)

    assert (outcome.ok, outcome.final, outcome.value["type"]) == (False, True, "SkipMessage")
    assert recorder.calls == [("before", None), ("skip", None)]


async def test_another_middleware_error_fails_the_attempt_like_a_handler_error() -> None:
    error = MiddlewareError("not now")
    recorder = Recorder(raises=error)

    outcome = await hooks(recorder).around(envelope(), never_called)

    assert (outcome.ok, outcome.final, outcome.value["type"]) == (False, False, "MiddlewareError")
    assert recorder.calls == [("before", None), ("after", error)]


async def test_a_message_failed_by_middleware_is_not_called_and_ends_the_event() -> None:
    recorder = Recorder(fails=True)

    outcome = await hooks(recorder).around(envelope(), never_called)

    assert (outcome.ok, outcome.final, outcome.value["type"]) == (False, True, "MessageFailed")
    assert recorder.calls == [("before", None), ("after", None)]


async def test_a_hook_that_raises_anything_else_is_logged_and_the_call_goes_on() -> None:
    broken, recorder = Recorder(raises=RuntimeError("bug")), Recorder()

    outcome = await hooks(broken, recorder).around(envelope(), lambda: returns(Outcome(True, 1)))

    assert outcome.ok
    assert recorder.calls == [("before", None), ("after", 1)]


async def test_a_call_cancelled_midway_still_gets_its_after_hook() -> None:
    recorder = Recorder()

    async def cancelled() -> Outcome:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await hooks(recorder).around(envelope(), cancelled)

    assert recorder.calls[1][0] == "after"
    assert isinstance(recorder.calls[1][1], asyncio.CancelledError)


async def test_current_message_is_set_for_the_call_and_cleared_after() -> None:
    seen: list[Any] = []

    async def call() -> Outcome:
        seen.append(CurrentMessage.get_current_message())
        return Outcome(True, None)

    await hooks(CurrentMessage()).around(envelope(), call)

    assert seen[0].message_id == "m-1"
    assert CurrentMessage.get_current_message() is None


async def never_called() -> Outcome:
    raise AssertionError("the call must not run")


def test_a_dotted_path_names_a_middleware_class_or_instance() -> None:
    loaded = load_middleware(
        ["dramatiq.middleware.CurrentMessage", "tests.unit.test_middleware.CURRENT"]
    )

    assert isinstance(loaded[0], CurrentMessage)
    assert loaded[1] is CURRENT


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("no_such_module.Thing", ImportError, "whose module cannot be imported"),
        ("CurrentMessage", SettingsError, "which is not module.Name"),
        ("dramatiq.middleware.NoSuchThing", SettingsError, "not a Dramatiq middleware"),
        ("dramatiq.Message", SettingsError, "not a Dramatiq middleware"),
        ("tests.unit.test_middleware.NeedsArguments", SettingsError, "name an instance instead"),
        ("dramatiq.middleware.TimeLimit", SettingsError, "SERIATIM_HANDLER_TIMEOUT"),
        ("dramatiq.middleware.Retries", SettingsError, "mailboxes retry in place"),
    ],
)
def test_a_bad_path_is_an_error_naming_it(path: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=rf"SERIATIM_MIDDLEWARE names '{path}', .*{message}"):
        load_middleware(["dramatiq.middleware.CurrentMessage", path])


async def test_a_worker_with_a_bad_middleware_path_stops_before_it_connects() -> None:
    settings = Settings(
        middleware=("no_such_module.Counting",),
        database_url=f"postgresql://nobody@127.0.0.1:1/{uuid.uuid4().hex}",
    )

    with pytest.raises(ImportError, match=r"SERIATIM_MIDDLEWARE names 'no_such_module\.Counting'"):
        await run_worker(settings, asyncio.Event())
