"""The PostgreSQL journal: schema, named queries and the store that runs them."""

from actors.store.journal import BatchRequest, Journal
from actors.store.rows import (
    Accepted,
    BacklogFull,
    Credentials,
    EventPage,
    EventRow,
    KeyTaken,
    ListedEvent,
    MailboxRow,
    dump_json,
)
from actors.store.tenancy import ClientSettings, IntakeRow, Standing, Tenancy

__all__ = [
    "Accepted",
    "BacklogFull",
    "BatchRequest",
    "ClientSettings",
    "Credentials",
    "EventPage",
    "EventRow",
    "IntakeRow",
    "Journal",
    "KeyTaken",
    "ListedEvent",
    "MailboxRow",
    "Standing",
    "Tenancy",
    "dump_json",
]
