"""Where the broker and the database are: several addresses each, and which one to try.

SERIATIM_AMQP_URL may list the nodes of a RabbitMQ cluster separated by commas; every
process connects to one of them, moves to the next when its node fails, and starts at an
offset of its own so that the processes of a deployment spread over the nodes.
SERIATIM_DATABASE_URL may name several hosts in one DSN (libpq's and asyncpg's
`postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write`): the driver then
picks the host that takes writes, so a process follows a promoted primary by reconnecting.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

AMQP_SCHEMES = ("amqp", "amqps")
POSTGRES_SCHEMES = ("postgres", "postgresql")
#: asyncpg's SessionAttribute values (libpq's target_session_attrs).
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:/,]+)(:[0-9]{1,5})?$")


class AddressError(ValueError):
    """An address list seriatim cannot use; the message says which part, without secrets."""


def split_urls(value: str) -> tuple[str, ...]:
    """The comma-separated URLs of `value`, stripped; blank entries are an error."""
    urls = tuple(part.strip() for part in value.split(","))
    if not all(urls):
        raise AddressError(f"an empty URL in the list: {redact(value)}")
    return urls


def amqp_urls(value: str) -> tuple[str, ...]:
    """Each broker node's URL, checked: an amqp(s) scheme, a host and a numeric port."""
    urls = split_urls(value)
    for url in urls:
        try:
            parts = urlsplit(url)
            valid = parts.scheme in AMQP_SCHEMES and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise AddressError(f"not an amqp:// or amqps:// URL with a host: {redact(url)}")
    if len(set(urls)) != len(urls):
        raise AddressError(f"a node is listed twice: {redact(value)}")
    return urls


def check_database_url(url: str) -> None:
    """A postgresql:// URL with one host or several (`h1:5432,h2:5433`), each with a
    numeric port if any, and a target_session_attrs asyncpg knows, if given."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise AddressError(f"not a URL with a host: {redact(url)}") from None
    hosts = parts.netloc.rpartition("@")[2].split(",")
    if parts.scheme not in POSTGRES_SCHEMES or not all(_valid_host(host) for host in hosts):
        raise AddressError(f"not a postgresql:// URL with a host: {redact(url)}")
    attrs = parse_qs(parts.query).get("target_session_attrs", [])
    if any(attr not in SESSION_ATTRS for attr in attrs):
        raise AddressError(
            f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}: {redact(url)}"
        )


def _valid_host(host: str) -> bool:
    match = _HOST.fullmatch(host)
    return match is not None and (match[2] is None or int(match[2][1:]) <= 65535)


def redact(url: str) -> str:
    """The URL(s) without passwords, for error messages and logs."""
    return re.sub(r"(//[^:/@,]*:)[^@/]*@", r"\1***@", url)


class NodeRing:
    """The broker nodes in a fixed ring, starting at an offset of this process's own.

    `current` is the node to connect to; `advance()` moves on to the next one after a failed
    connect or a lost connection, round the ring. The offset is random unless given, so the
    gateways and workers of a deployment start spread over the nodes.
    """

    def __init__(self, urls: Sequence[str], start: int | None = None) -> None:
        if not urls:
            raise AddressError("no broker URL")
        self._urls = tuple(urls)
        self._at = (random.randrange(len(self._urls)) if start is None else start) % len(self._urls)

    def __len__(self) -> int:
        return len(self._urls)

    @property
    def current(self) -> str:
        return self._urls[self._at]

    def advance(self) -> str:
        """Move on to the next node; returns it."""
        self._at = (self._at + 1) % len(self._urls)
        return self.current

    def order(self) -> list[str]:
        """Every node, the current one first: the order to try them in."""
        return [*self._urls[self._at :], *self._urls[: self._at]]
