"""The PostgreSQL journal: schema, named queries and the store that runs them."""

from actors.store.journal import Journal
from actors.store.rows import (
    Accepted,
    BacklogFull,
    Credentials,
    EventRow,
    KeyTaken,
    MailboxRow,
    dump_json,
)
from actors.store.tenancy import ClientSettings, Standing, Tenancy

__all__ = [
    "Accepted",
    "BacklogFull",
    "ClientSettings",
    "Credentials",
    "EventRow",
    "Journal",
    "KeyTaken",
    "MailboxRow",
    "Standing",
    "Tenancy",
    "dump_json",
]
