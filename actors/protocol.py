"""The wire protocol: events travel as Dramatiq messages; control messages as small JSON facts."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any, ClassVar, NamedTuple

import dramatiq

from actors.store import EventRow

MAILBOX_ACTOR = "seriatim.mailbox"


class ProtocolError(ValueError):
    """A message that is not one of ours; it is dropped with a log line, never retried."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventMessage:
    """One accepted event on its way to the client's mailbox."""

    event_id: uuid.UUID
    client_id: uuid.UUID
    seq: int
    type: str
    payload: Any
    traceparent: str | None = None
    accepted_at: float | None = None  # seconds since the epoch, for the queue wait

    @classmethod
    def of(cls, row: EventRow) -> EventMessage:
        return cls(
            row.id,
            row.client_id,
            row.seq,
            row.type,
            row.payload,
            row.traceparent,
            row.accepted_at.timestamp(),
        )

    def to_dramatiq(self, queue_name: str) -> dramatiq.Message[Any]:
        options: dict[str, Any] = {"traceparent": self.traceparent} if self.traceparent else {}
        if self.accepted_at is not None:
            options["accepted_at"] = self.accepted_at
        return dramatiq.Message(
            queue_name=queue_name,
            actor_name=MAILBOX_ACTOR,
            args=(),
            kwargs={
                "event_id": str(self.event_id),
                "client_id": str(self.client_id),
                "seq": self.seq,
                "type": self.type,
                "payload": self.payload,
            },
            options=options,
            message_id=str(self.event_id),
        )

    @classmethod
    def from_dramatiq(cls, message: dramatiq.Message[Any]) -> EventMessage:
        if message.actor_name != MAILBOX_ACTOR:
            raise ProtocolError(f"not a mailbox message: actor {message.actor_name!r}")
        seq = message.kwargs.get("seq") if isinstance(message.kwargs, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ProtocolError(f"malformed mailbox message: seq {seq!r}")
        try:
            kw = message.kwargs
            return cls(
                uuid.UUID(kw["event_id"]),
                uuid.UUID(kw["client_id"]),
                seq,
                str(kw["type"]),
                kw["payload"],
                message.options.get("traceparent"),
                _seconds(message.options.get("accepted_at")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError(f"malformed mailbox message: {error!r}") from None


def _seconds(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def decode_dramatiq(body: bytes) -> dramatiq.Message[Any]:
    try:
        return dramatiq.Message.decode(body)
    except dramatiq.errors.DecodeError as error:
        raise ProtocolError(f"undecodable message: {error}") from None


# --- control messages between gateway, supervisor and workers -----------------------------

_CONTROL: dict[str, type[Control]] = {}


@dataclasses.dataclass(frozen=True)
class Control:
    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CONTROL[cls.kind] = cls

    def encode(self) -> bytes:
        fields = {
            f.name: str(value)
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) is not None  # absent: the field's default
        }
        return json.dumps({"kind": self.kind, **fields}).encode()

    @staticmethod
    def decode(body: bytes) -> Control:
        try:
            data = json.loads(body)
            cls = _CONTROL[data.pop("kind")]
            return cls.of_fields(data)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ProtocolError(f"malformed control message: {error!r}") from None

    @classmethod
    def of_fields(cls, data: dict[str, Any]) -> Control:
        """The message from its decoded JSON fields (`kind` taken out)."""
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        # Fields a newer sender added are ignored (rolling upgrades).
        return cls(**{k: _typed(hints[k], v) for k, v in data.items() if k in hints})


def _typed(hint: Any, value: str) -> Any:
    if hint == "uuid.UUID":
        return uuid.UUID(value)
    if hint in ("int", "int | None"):
        return int(value)
    return value


@dataclasses.dataclass(frozen=True)
class MailboxWanted(Control):
    """A fact: an event arrived for a mailbox that may be idle."""

    kind: ClassVar[str] = "mailbox_wanted"
    client_id: uuid.UUID
    traceparent: str = ""  # of the event that wants it, for the supervisor's span link


@dataclasses.dataclass(frozen=True)
class MailboxesWanted(Control):
    """A fact: events arrived for these mailboxes, which may be idle (a gateway's wants of one
    loop turn, in one message); each with the traceparent of an event that wants it."""

    kind: ClassVar[str] = "mailboxes_wanted"
    wanted: tuple[tuple[uuid.UUID, str], ...]

    def encode(self) -> bytes:
        wanted = [[str(client), traceparent] for client, traceparent in self.wanted]
        return json.dumps({"kind": self.kind, "wanted": wanted}).encode()

    @classmethod
    def of_fields(cls, data: dict[str, Any]) -> Control:
        wanted = data["wanted"]
        if not isinstance(wanted, list):
            raise TypeError(f"wanted is {type(wanted).__name__}, not a list")
        return cls(tuple(_wanted(item) for item in wanted))


def _wanted(item: Any) -> tuple[uuid.UUID, str]:
    if not isinstance(item, list) or len(item) < 2 or not isinstance(item[1], str):
        raise ValueError(f"not a [client, traceparent] list: {item!r}")
    return uuid.UUID(str(item[0])), item[1]


@dataclasses.dataclass(frozen=True)
class MailboxPassivated(Control):
    """A fact: a worker stopped consuming an idle mailbox."""

    kind: ClassVar[str] = "mailbox_passivated"
    client_id: uuid.UUID
    worker_id: str


@dataclasses.dataclass(frozen=True)
class MailboxFailed(Control):
    """A fact: a mailbox exceeded its restart intensity or halted on a dead event."""

    kind: ClassVar[str] = "mailbox_failed"
    client_id: uuid.UUID
    worker_id: str
    cause: str  # a SuspensionCause (actors/states.py); a str on the wire
    reason: str
    traceparent: str = ""  # of the event that failed last
    epoch: int | None = None  # the placement that failed: a stale one is ignored


@dataclasses.dataclass(frozen=True)
class WorkerStopped(Control):
    """A fact: a worker released all its mailboxes and is leaving."""

    kind: ClassVar[str] = "worker_stopped"
    worker_id: str


@dataclasses.dataclass(frozen=True)
class Tick(Control):
    """A command to the active supervisor: run the periodic sweep if it is due."""

    kind: ClassVar[str] = "tick"


@dataclasses.dataclass(frozen=True)
class StartMailbox(Control):
    """A command to a worker: consume this client's mailbox."""

    kind: ClassVar[str] = "start_mailbox"
    client_id: uuid.UUID
    epoch: int | None = None  # the placement's fencing token (None: read it from the journal)


class Start(NamedTuple):
    """One mailbox of a StartMailboxes: its placement's epoch and the client's position as
    the placement found it (`done_seq` is exact for the new owner until it writes)."""

    client_id: uuid.UUID
    epoch: int
    done_seq: int
    last_seq: int


@dataclasses.dataclass(frozen=True)
class StartMailboxes(Control):
    """A command to a worker: consume these mailboxes (one message per worker and placement
    round). A worker of an older release drops it as an unknown kind and starts the mailboxes
    placed on it at its next reconcile."""

    kind: ClassVar[str] = "start_mailboxes"
    mailboxes: tuple[Start, ...]

    def encode(self) -> bytes:
        starts = [[str(s.client_id), s.epoch, s.done_seq, s.last_seq] for s in self.mailboxes]
        return json.dumps({"kind": self.kind, "mailboxes": starts}).encode()

    @classmethod
    def of_fields(cls, data: dict[str, Any]) -> Control:
        starts = data["mailboxes"]
        if not isinstance(starts, list):
            raise TypeError(f"mailboxes is {type(starts).__name__}, not a list")
        return cls(tuple(_start(item) for item in starts))


def _start(item: Any) -> Start:
    if not isinstance(item, list) or len(item) < 4:
        raise ValueError(f"not a [client, epoch, done_seq, last_seq] list: {item!r}")
    client, *numbers = item[:4]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        raise ValueError(f"epoch, done_seq and last_seq must be counts: {item!r}")
    epoch, done_seq, last_seq = numbers
    if done_seq > last_seq:
        raise ValueError(f"done_seq {done_seq} is past last_seq {last_seq}")
    return Start(uuid.UUID(str(client)), epoch, done_seq, last_seq)
