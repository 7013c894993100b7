"""The first start of `seriatim up` against an empty journal: an admin client is made, and
the console's address with that client's id and secret is printed once, so that a newcomer
goes from `make up` to a signed-in console without a second terminal."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from typing import TextIO

from actors.credentials import hash_secret, new_secret
from actors.settings import Settings
from actors.store import Journal

NAME = "admin"


@dataclasses.dataclass(frozen=True, slots=True)
class FirstAdmin:
    client_id: uuid.UUID
    client_secret: str


async def first_admin(settings: Settings) -> FirstAdmin | None:
    """The admin client made now, when the journal had no client; None otherwise."""
    journal = await Journal.connect(settings.database_url, min_size=1, max_size=1)
    try:
        secret = new_secret()
        created = await journal.create_first_admin(NAME, hash_secret(secret))
    finally:
        await journal.close()
    return FirstAdmin(created, secret) if created else None


def console_url(settings: Settings) -> str:
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine reaches it here
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}/console"


def announce(settings: Settings, admin: FirstAdmin, out: TextIO = sys.stdout) -> None:
    """Print the console's address and the new admin's credentials (never logged)."""
    lines = [
        "",
        "seriatim: first start on an empty database: an admin client was created.",
        "Its secret is shown this once; rotate it with `seriatim client rotate-secret ID`.",
        f"  console        {console_url(settings)}",
        f"  client id      {admin.client_id}",
        f"  client secret  {admin.client_secret}",
        "",
    ]
    if settings.console == "off":
        lines[3] = "  console        off (SERIATIM_CONSOLE=off)"
    print("\n".join(lines), file=out, flush=True)
