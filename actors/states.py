"""The states the journal records and the API shows: an event's status, a mailbox's state, its
dead-event policy and why it was suspended. Defined here once; the journal's rows, the API's
validation and the OpenAPI document all take them from here (`schema.sql` checks the same
values)."""

from __future__ import annotations

import enum


class EventStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class MailboxState(enum.StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    #: Shown by the API and the metrics, never stored: active, its next event retrying.
    BACKING_OFF = "backing_off"
    SUSPENDED = "suspended"


class DeadEventPolicy(enum.StrEnum):
    """What a mailbox does after an event ends dead."""

    SKIP = "skip"  # go on with the next event
    HALT = "halt"  # escalate: the supervisor suspends the mailbox


class SuspensionCause(enum.StrEnum):
    """Why a mailbox escalated to the supervisor."""

    RESTART_INTENSITY = "restart_intensity"  # too many failures in the intensity window
    HALT = "halt"  # a dead event under the halt policy
    QUEUE_REFUSED = "queue_refused"  # the broker refuses to declare its queue (see host.py)
