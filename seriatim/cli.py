"""The `seriatim` command: the composition root of every seriatim process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import uuid
from collections.abc import Callable, Sequence

import asyncpg

from actors import logs, metrics, tracing
from actors.settings import Settings, SettingsError
from actors.store.migrate import migrate
from gateway import operations
from gateway.problems import Problem
from seriatim.commands import add_commands, command_of
from seriatim.commands import run as run_command
from seriatim.first_run import announce, first_admin
from seriatim.operator import CLI_ACTOR, operator_services

log = logging.getLogger("seriatim")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="seriatim",
        description=(
            "Per-client strictly sequential event processing. Settings come from SERIATIM_* "
            "environment variables (see docs/api.md)."
        ),
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="apply the schema and run the whole system here")
    up.add_argument("--workers", type=_count, default=2, help="worker processes (default 2)")
    up.add_argument(
        "--metrics-port",
        type=_port,
        default=9464,
        help="serve the metrics of every process on this port (default 9464; 0: none)",
    )
    gateway = commands.add_parser("gateway", help="run the HTTP gateway")
    gateway.add_argument("--host", help="listen address (default SERIATIM_HTTP_HOST)")
    gateway.add_argument("--port", type=_port, help="listen port (default SERIATIM_HTTP_PORT)")
    worker = commands.add_parser("worker", help="run one worker process")
    worker.add_argument(
        "--worker-id", type=_worker_id, help="a stable id for this worker (default: generated)"
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics on this port (on SERIATIM_HTTP_HOST)",
    )
    commands.add_parser("migrate", help="create the database if missing and apply the schema")
    client = commands.add_parser("client", help="manage clients")
    client_commands = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    create = client_commands.add_parser("create", help="create a client and print its secret")
    create.add_argument("--name", required=True, type=_name, help="a label for the client")
    create.add_argument("--admin", action="store_true", help="grant the admin scope")
    for action, text in CLIENT_ACTIONS.items():
        command = client_commands.add_parser(action, help=text)
        command.add_argument("client_id", type=_client_id, help="the client's id")
    add_commands(commands, client_commands)
    return root


#: `seriatim client <action> <id>`; each but `rotate-secret` and `delete` is a standing change.
CLIENT_ACTIONS = {
    "disable": "refuse the client's tokens and give it no new ones",
    "enable": "let a disabled client get tokens again (its old tokens stay refused)",
    "grant-admin": "grant the admin scope (to tokens issued from now on)",
    "revoke-admin": "take the admin scope away, refusing the client's tokens issued until now",
    "rotate-secret": "print a new secret; the old one and the client's tokens stop working",
    "delete": "delete a client with no unfinished events (its events are kept)",
}
STANDING_CHANGES: dict[str, dict[str, bool]] = {
    "disable": {"disabled": True},
    "enable": {"disabled": False},
    "grant-admin": {"admin": True},
    "revoke-admin": {"admin": False},
}


def _count(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _worker_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", text):
        raise argparse.ArgumentTypeError("must be 1-100 letters, digits, '-' or '_'")
    return text


def _client_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a client id (a UUID)") from None


def _name(text: str) -> str:
    if not 1 <= len(text.strip()) <= 200:
        raise argparse.ArgumentTypeError("must be 1-200 characters")
    return text.strip()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"seriatim: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, args.command, settings.log_format)
    if args.command not in ("up", "gateway", "worker", "migrate"):
        _quiet()  # an operator command's stdout is its answer (JSON or a table)
    if args.command in ("gateway", "worker"):
        tracing.configure(f"seriatim-{args.command}")
        metrics.use_exemplars(settings.metrics_exemplars == "on")
    try:
        return _run(args, settings)
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncpg.PostgresError, ValueError, ImportError, RuntimeError) as error:
        print(f"seriatim {args.command}: {error}", file=sys.stderr)
        return 1


def _quiet() -> None:
    """Only warnings and errors are logged, to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn picks it for the gateway by itself)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        asyncio.run(migrate(settings.database_url))
        return 0
    if args.command == "client" and args.client_command == "create":
        print(json.dumps(asyncio.run(_create_client(settings, args.name, args.admin))))
        return 0
    if command_of(args) is not None:
        return asyncio.run(run_command(settings, args))
    if args.command == "client":
        answer = asyncio.run(_change_client(settings, args.client_command, args.client_id))
        if answer is None:
            print(f"seriatim client: no client {args.client_id}", file=sys.stderr)
            return 1
        print(json.dumps(answer))
        return 0
    if args.command == "gateway":
        from gateway.server import serve_gateway

        return serve_gateway(settings, args.host, args.port)
    if args.command == "worker":
        from seriatim.worker import run_worker

        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            runner.run(
                _until_signalled(
                    lambda stop: run_worker(settings, stop, args.worker_id, args.metrics_port)
                )
            )
        return 0
    from seriatim.process import run_up

    asyncio.run(migrate(settings.database_url))
    admin = asyncio.run(first_admin(settings))
    if admin is not None:
        announce(settings, admin)
    return asyncio.run(run_up(settings, args.workers, args.metrics_port or None))


async def _create_client(settings: Settings, name: str, admin: bool) -> dict[str, object]:
    """Create a client through the gateway's operations, so it is audited like the others."""
    async with operator_services(settings) as services:
        client_id, secret = await operations.create_client(services, CLI_ACTOR, name, admin)
    return {"client_id": str(client_id), "client_secret": secret, "name": name, "admin": admin}


async def _change_client(
    settings: Settings, action: str, client_id: uuid.UUID
) -> dict[str, object] | None:
    """Apply a `seriatim client <action>` through the gateway's operations (so it is audited,
    as the command line); None when there is no such client. Gateways see the change within
    SERIATIM_CLIENT_RECHECK seconds."""
    async with operator_services(settings) as services:
        try:
            if action == "rotate-secret":
                secret = await operations.rotate_secret(services, CLI_ACTOR, client_id)
                return {"client_id": str(client_id), "client_secret": secret}
            if action == "delete":
                await operations.delete_client(services, CLI_ACTOR, client_id)
                return {"client_id": str(client_id), "deleted": True}
            await operations.change_client(
                services, CLI_ACTOR, client_id, dict(STANDING_CHANGES[action])
            )
        except Problem as refused:
            if refused.status == 404:
                return None
            raise RuntimeError(refused.detail) from None
        row = await services.tenancy.settings(client_id)
    if row is None:
        return None
    return {"client_id": str(client_id), "admin": row.admin, "disabled": row.disabled}


async def _until_signalled(main: object) -> None:
    """Run `main(stopping)`; SIGINT and SIGTERM only set the event."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await main(stopping)  # type: ignore[operator]
