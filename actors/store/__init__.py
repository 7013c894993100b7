"""The PostgreSQL journal: schema, named queries and the store that runs them."""

from actors.store.journal import BatchRequest, Journal
from actors.store.rows import (
    Accepted,
    AttemptRow,
    BacklogFull,
    Credentials,
    EventGone,
    EventPage,
    EventRow,
    KeyTaken,
    ListedEvent,
    MailboxRow,
    QuotaFull,
    dump_json,
)
from actors.store.tenancy import ClientSettings, IntakeRow, Standing, Tenancy, TooManySecrets

__all__ = [
    "Accepted",
    "AttemptRow",
    "BacklogFull",
    "BatchRequest",
    "ClientSettings",
    "Credentials",
    "EventGone",
    "EventPage",
    "EventRow",
    "IntakeRow",
    "Journal",
    "KeyTaken",
    "ListedEvent",
    "MailboxRow",
    "QuotaFull",
    "Standing",
    "Tenancy",
    "TooManySecrets",
    "dump_json",
]
