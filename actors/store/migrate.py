"""Creates the database when it is missing and applies schema.sql to it."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)


def schema_text() -> str:
    """schema.sql: shipped inside the wheel, or at the top of a source checkout."""
    shipped = resources.files(__package__).joinpath("schema.sql")
    if shipped.is_file():
        return shipped.read_text("utf-8")
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text("utf-8")


def _maintenance_dsn(dsn: str) -> tuple[str, str]:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError(f"the database URL names no database: {dsn}")
    return urlunsplit(parts._replace(path="/postgres")), name


async def create_database(dsn: str) -> bool:
    """Create the database of `dsn` if it does not exist; True when it was created."""
    maintenance, name = _maintenance_dsn(dsn)
    connection = await asyncpg.connect(maintenance)
    try:
        if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await connection.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        log.info("created database %s", name)
        return True
    finally:
        await connection.close()


async def migrate(dsn: str) -> None:
    """Create the database if needed and apply the idempotent schema under an advisory lock."""
    await create_database(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(7215001)")
            await connection.execute(schema_text())
    finally:
        await connection.close()
    log.info("schema applied")
