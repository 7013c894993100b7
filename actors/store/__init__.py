"""The PostgreSQL journal: schema, named queries and the store that runs them."""

from actors.store.journal import (
    UNAVAILABLE,
    Accepted,
    Credentials,
    EventRow,
    Journal,
    KeyTaken,
    MailboxRow,
    dump_json,
)

__all__ = [
    "UNAVAILABLE",
    "Accepted",
    "Credentials",
    "EventRow",
    "Journal",
    "KeyTaken",
    "MailboxRow",
    "dump_json",
]
