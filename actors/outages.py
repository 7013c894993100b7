"""What "unreachable right now" means: the journal's and the broker's outages, which callers
wait out and retry, and never take for a wrong request or a reason to crash.

Each is defined here once and caught by this name everywhere.
"""

from __future__ import annotations

import asyncpg

from actors.amqp import AmqpError

#: The journal (PostgreSQL) is unreachable right now; the request itself is not wrong.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
    # A query that lands on a session PostgreSQL is terminating ("cannot switch to state N;
    # another operation is in progress", MagicStack/asyncpg#1069), as in a fast restart.
    asyncpg.InternalClientError,
)

#: The journal or the broker is unreachable: retry later, never crash the worker.
OUTAGES: tuple[type[BaseException], ...] = (*UNAVAILABLE, AmqpError)
