"""The wire protocol: event messages through Dramatiq's envelope, control messages as JSON."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import dramatiq
import pytest

from actors.protocol import (
    MAILBOX_ACTOR,
    Control,
    EventMessage,
    MailboxesWanted,
    MailboxFailed,
    MailboxPassivated,
    MailboxWanted,
    ProtocolError,
    Start,
    StartMailbox,
    StartMailboxes,
    Tick,
    WorkerStopped,
    decode_dramatiq,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def event(**changes: Any) -> EventMessage:
    message = EventMessage(
        event_id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        seq=42,
        type="demo.echo",
        payload={"text": "héllo", "n": [1, 2.5, None, True], "nested": {"k": "v"}},
        traceparent=TRACEPARENT,
        accepted_at=1795000000.123456,
    )
    return dataclasses.replace(message, **changes)


def through_the_wire(message: EventMessage) -> EventMessage:
    body = message.to_dramatiq("seriatim.mailbox.c").encode()
    return EventMessage.from_dramatiq(decode_dramatiq(body))


def test_event_round_trip_preserves_every_field() -> None:
    original = event()

    assert through_the_wire(original) == original


def test_event_without_traceparent_round_trips() -> None:
    original = event(traceparent=None, accepted_at=None)

    assert through_the_wire(original) == original


@pytest.mark.parametrize("payload", [None, "text", 0, [], {}, ["a", {"b": None}]])
def test_any_json_payload_round_trips(payload: Any) -> None:
    original = event(payload=payload)

    assert through_the_wire(original) == original


def test_dramatiq_message_id_is_the_event_id() -> None:
    original = event()

    envelope = original.to_dramatiq("seriatim.mailbox.c")

    assert envelope.message_id == str(original.event_id)
    assert envelope.actor_name == MAILBOX_ACTOR
    assert envelope.queue_name == "seriatim.mailbox.c"


def test_message_for_another_actor_is_rejected() -> None:
    envelope = event().to_dramatiq("q")._replace(actor_name="someone.else")

    with pytest.raises(ProtocolError, match=r"someone\.else"):
        EventMessage.from_dramatiq(envelope)


@pytest.mark.parametrize("missing", ["event_id", "client_id", "seq", "type", "payload"])
def test_message_with_a_missing_kwarg_is_rejected(missing: str) -> None:
    envelope = event().to_dramatiq("q")
    kwargs = {k: v for k, v in envelope.kwargs.items() if k != missing}

    with pytest.raises(ProtocolError, match="malformed"):
        EventMessage.from_dramatiq(envelope._replace(kwargs=kwargs))


@pytest.mark.parametrize(("key", "value"), [("event_id", "not-a-uuid"), ("seq", "forty-two")])
def test_message_with_a_malformed_kwarg_is_rejected(key: str, value: str) -> None:
    envelope = event().to_dramatiq("q")
    kwargs = {**envelope.kwargs, key: value}

    with pytest.raises(ProtocolError, match="malformed"):
        EventMessage.from_dramatiq(envelope._replace(kwargs=kwargs))


def test_message_without_kwargs_is_rejected() -> None:
    envelope = dramatiq.Message(
        queue_name="q", actor_name=MAILBOX_ACTOR, args=(), kwargs={}, options={}
    )

    with pytest.raises(ProtocolError):
        EventMessage.from_dramatiq(envelope)


@pytest.mark.parametrize("body", [b"", b"garbage", b"\xff\xfe\x00", b"[]", b"null", b"{}"])
def test_garbage_bytes_are_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="undecodable"):
        decode_dramatiq(body)


CLIENT = uuid.UUID("6f1c2e2a-0000-4000-8000-000000000001")


@pytest.mark.parametrize(
    "control",
    [
        MailboxWanted(client_id=CLIENT),
        MailboxWanted(client_id=CLIENT, traceparent=TRACEPARENT),
        MailboxFailed(CLIENT, "w-1", "halt", "dead event", TRACEPARENT),
        MailboxPassivated(client_id=CLIENT, worker_id="w-1"),
        WorkerStopped(worker_id="w-2"),
        Tick(),
        StartMailbox(client_id=CLIENT),
        StartMailboxes((Start(CLIENT, 3, 1, 4), Start(uuid.UUID(int=7), 1, 0, 0))),
        StartMailboxes(()),
        MailboxesWanted(((CLIENT, TRACEPARENT), (uuid.UUID(int=7), ""))),
    ],
    ids=lambda control: f"{type(control).__name__}-{len(control.encode())}",
)
def test_control_message_round_trips(control: Control) -> None:
    decoded = Control.decode(control.encode())

    assert decoded == control
    assert type(decoded) is type(control)


def test_control_message_names_its_kind() -> None:
    assert json.loads(StartMailbox(client_id=CLIENT).encode()) == {
        "kind": "start_mailbox",
        "client_id": str(CLIENT),
    }


def test_fields_a_newer_sender_added_are_ignored() -> None:
    body = json.dumps({"kind": "start_mailbox", "client_id": str(CLIENT), "since": "v2"})

    assert Control.decode(body.encode()) == StartMailbox(client_id=CLIENT)


@pytest.mark.parametrize(
    "body",
    [
        b'{"kind": "no_such_kind"}',
        b'{"client_id": "6f1c2e2a-0000-4000-8000-000000000001"}',
        b"{not json",
        b"\xff",
        b"[]",
        b'"tick"',
        b"null",
        b'{"kind": "start_mailbox"}',
        b'{"kind": "start_mailbox", "client_id": "nope"}',
        b'{"kind": ["tick"]}',
        b'{"kind": "start_mailboxes"}',
        b'{"kind": "mailboxes_wanted", "wanted": {}}',
        b'{"kind": "mailboxes_wanted", "wanted": [["nope", ""]]}',
        b'{"kind": "mailboxes_wanted", "wanted": [["6f1c2e2a-0000-4000-8000-000000000001", 3]]}',
        b'{"kind": "start_mailboxes", "mailboxes": "x"}',
        b'{"kind": "start_mailboxes", "mailboxes": [["nope", 1, 0, 0]]}',
        b'{"kind": "start_mailboxes", "mailboxes": [[1, 1, 0, 0]]}',
        b'{"kind": "start_mailboxes", "mailboxes": [["6f1c2e2a-0000-4000-8000-000000000001", 1]]}',
        b'{"kind": "start_mailboxes", "mailboxes": [["6f1c2e2a-0000-4000-8000-000000000001",'
        b" 1, 5, 4]]}",
        b'{"kind": "start_mailboxes", "mailboxes": [["6f1c2e2a-0000-4000-8000-000000000001",'
        b" true, 0, 0]]}",
        b'{"kind": "start_mailboxes", "mailboxes": [["6f1c2e2a-0000-4000-8000-000000000001",'
        b" -1, 0, 0]]}",
    ],
)
def test_malformed_control_message_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed control message"):
        Control.decode(body)
