"""The operator commands of `seriatim` (client, mailbox, event, keys, status): each goes
through the gateway's operations like the admin API and the console, so it is validated and
audited the same way; `--json` prints JSON, a readable table otherwise."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from actors.settings import Settings
from actors.states import MailboxState
from actors.store.console import ConsoleReads
from gateway import operations
from gateway.bodies import mailbox_json, rfc3339
from gateway.operations import DeadFilter
from gateway.problems import Problem
from gateway.services import Services
from seriatim.operator import CLI_ACTOR, operator_services
from supervision.supervisor import WORKER_ALIVE_WITHIN

Result = dict[str, Any] | list[dict[str, Any]]
Command = Callable[[Services, argparse.Namespace], Coroutine[Any, Any, Result]]
STATES = tuple(str(s) for s in MailboxState)


def _uuid(what: str) -> Callable[[str], uuid.UUID]:
    def parse(text: str) -> uuid.UUID:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (a UUID)") from None

    return parse


def _moment(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (ISO 8601, e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return value


def add_commands(commands: Any, client_commands: Any) -> None:
    """Add the operator commands to `seriatim`'s parser (`client` has its own already)."""
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON, not a table")
    listing = client_commands.add_parser("list", help="list clients", parents=[json_flag])
    listing.add_argument("--state", choices=("idle", "active", "suspended"))
    listing.add_argument("--name", help="only names containing this")
    listing.add_argument("--limit", type=_limit, default=100)
    show = client_commands.add_parser("show", help="one client's settings", parents=[json_flag])
    show.add_argument("client_id", type=_uuid("a client id"))

    mailbox = commands.add_parser("mailbox", help="see and steer mailboxes")
    actions = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    m_list = actions.add_parser("list", help="mailboxes and their state", parents=[json_flag])
    m_list.add_argument("--state", choices=STATES)
    m_list.add_argument("--limit", type=_limit, default=100)
    for name, text in (("show", "one mailbox"), ("resume", "resume a suspended mailbox")):
        one = actions.add_parser(name, help=text, parents=[json_flag])
        one.add_argument("client_id", type=_uuid("a client id"))
    suspend = actions.add_parser("suspend", help="suspend a mailbox", parents=[json_flag])
    suspend.add_argument("client_id", type=_uuid("a client id"))
    suspend.add_argument("--reason", required=True, help="why (kept and audited)")

    event = commands.add_parser("event", help="see and redrive events")
    e_actions = event.add_subparsers(dest="event_command", required=True, metavar="ACTION")
    e_show = e_actions.add_parser("show", help="one event", parents=[json_flag])
    e_show.add_argument("event_id", type=_uuid("an event id"))
    redrive = e_actions.add_parser(
        "redrive",
        help="redrive one dead event, or every dead one matching a filter",
        parents=[json_flag],
    )
    redrive.add_argument("event_id", nargs="?", type=_uuid("an event id"))
    redrive.add_argument("--client", type=_uuid("a client id"), help="only this client's")
    redrive.add_argument("--since", type=_moment, help="died at or after this time")
    redrive.add_argument("--until", type=_moment, help="died before this time")
    redrive.add_argument("--dry-run", action="store_true", help="only count what would go")

    keys = commands.add_parser("keys", help="token signing keys")
    k_actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k_actions.add_parser("rotate", help="a new key signs from now on", parents=[json_flag])
    k_actions.add_parser(
        "rotate-console",
        help="a new key signs console sessions; older ones verify theirs until they expire",
        parents=[json_flag],
    )
    commands.add_parser(
        "status", help="workers, backlog and suspended mailboxes", parents=[json_flag]
    )


def command_of(args: argparse.Namespace) -> tuple[Command, bool] | None:
    """The operator command `args` name, and whether it needs RabbitMQ; None for others."""
    if args.command == "client" and args.client_command in ("list", "show"):
        return (client_list if args.client_command == "list" else client_show), False
    if args.command == "mailbox":
        chosen = {"list": mailbox_list, "show": mailbox_show, "resume": mailbox_resume}
        command = chosen.get(args.mailbox_command, mailbox_suspend)
        return command, args.mailbox_command == "resume"
    if args.command == "event":
        return (event_show, False) if args.event_command == "show" else (event_redrive, True)
    if args.command == "keys":
        rotate = keys_rotate_console if args.keys_command == "rotate-console" else keys_rotate
        return rotate, False
    if args.command == "status":
        return status, False
    return None


async def run(settings: Settings, args: argparse.Namespace) -> int:
    found = command_of(args)
    assert found is not None
    command, broker = found
    try:
        if args.command == "event" and args.event_command == "redrive":
            _check_redrive(args)
        async with operator_services(settings, broker=broker) as services:
            result = await command(services, args)
    except Problem as refused:
        print(f"seriatim {args.command}: {refused.detail}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str) if args.json else table(result))
    return 0


def _check_redrive(args: argparse.Namespace) -> None:
    by_filter = args.client or args.since or args.until
    if args.event_id and by_filter:
        raise Problem(400, "usage", "give an event id or a filter (--client/--since/--until)")
    if not args.event_id and not by_filter:
        raise Problem(400, "usage", "give an event id, or a filter (--client/--since/--until)")


def table(result: Result) -> str:
    """A readable table of rows, or `name  value` lines of one object."""
    if isinstance(result, dict):
        width = max((len(k) for k in result), default=0)
        lines = []
        for k, v in result.items():
            if isinstance(v, list) and v and all(isinstance(row, dict) for row in v):
                lines.append(k)  # rows of their own (an event's attempts): a table below
                lines += ["  " + line for line in table(v).splitlines()]
            else:
                lines.append(f"{k.ljust(width)}  {_cell(v)}")
        return "\n".join(lines)
    if not result:
        return "(none)"
    columns = list(result[0])
    cells = [[_cell(row.get(c)) for c in columns] for row in result]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value).replace("\n", " ")[:80]


# --- the commands ------------------------------------------------------------------------


async def client_list(services: Services, args: argparse.Namespace) -> Result:
    name = (
        args.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if args.name
        else None
    )
    rows = await ConsoleReads(services.journal.pool).clients(
        state=args.state,
        name_like=f"%{name}%" if name else None,
        hide_idle=False,
        sort="backlog",
        after=None,
        limit=args.limit,
    )
    return [
        {
            "client_id": str(r.id),
            "name": r.name,
            "state": r.state,
            "backlog": r.backlog,
            "oldest_unfinished": rfc3339(r.oldest_unfinished),
            "restarts": r.restarts,
            "admin": r.admin,
            "disabled": r.disabled,
        }
        for r in rows
    ]


async def client_show(services: Services, args: argparse.Namespace) -> Result:
    row = await services.tenancy.settings(args.client_id)
    if row is None:
        raise Problem(404, "not-found", f"no client {args.client_id}")
    return {
        "client_id": str(row.id),
        "name": row.name,
        "admin": row.admin,
        "disabled": row.disabled,
        "backlog": row.backlog,
        "rate_per_second": row.rate_per_second or services.settings.rate_per_second,
        "rate_burst": row.rate_burst or services.settings.rate_burst,
        "max_backlog": row.max_backlog or services.settings.max_backlog,
        "webhook_type_pointer": row.webhook_type_pointer,
    }


async def mailbox_list(services: Services, args: argparse.Namespace) -> Result:
    stored = MailboxState.ACTIVE if args.state == MailboxState.BACKING_OFF else args.state
    rows = await services.journal.mailboxes(stored, None, args.limit)
    items = [_mailbox(services, row) for row in rows]
    return [i for i in items if args.state is None or i["state"] == args.state]


def _mailbox(services: Services, row: Any) -> dict[str, Any]:
    shown = mailbox_json(row, services.intensity)
    return {k: str(v) if isinstance(v, MailboxState) else v for k, v in shown.items()}


async def mailbox_show(services: Services, args: argparse.Namespace) -> Result:
    row = await services.journal.mailbox(args.client_id)
    if row is None:
        raise Problem(404, "not-found", f"no mailbox {args.client_id}")
    return _mailbox(services, row)


async def mailbox_resume(services: Services, args: argparse.Namespace) -> Result:
    await operations.resume_mailbox(services, CLI_ACTOR, args.client_id)
    return await mailbox_show(services, args)


async def mailbox_suspend(services: Services, args: argparse.Namespace) -> Result:
    await operations.suspend_mailbox(services, CLI_ACTOR, args.client_id, args.reason)
    return await mailbox_show(services, args)


async def event_show(services: Services, args: argparse.Namespace) -> Result:
    reads = ConsoleReads(services.journal.pool)
    owner = await reads.event_owner(args.event_id)
    detail = await reads.event(owner, args.event_id, 4096) if owner else None
    if detail is None:
        raise Problem(404, "not-found", f"no event {args.event_id}")
    attempts = await reads.attempts(detail.client_id, detail.id)
    return {
        "id": str(detail.id),
        "client_id": str(detail.client_id),
        "seq": detail.seq,
        "type": detail.type,
        "status": detail.status,
        "attempts": detail.attempts,
        "accepted_at": rfc3339(detail.accepted_at),
        "started_at": rfc3339(detail.started_at),
        "finished_at": rfc3339(detail.finished_at),
        "error": json.loads(detail.error) if detail.error else None,
        "redrive_of": str(detail.redrive_of) if detail.redrive_of else None,
        "redriven_by": [str(r) for r in detail.redriven_by],
        "attempt_log": [
            {
                "attempt": a.attempt,
                "started_at": rfc3339(a.started_at),
                "duration_ms": None if a.duration is None else round(a.duration * 1000, 3),
                "worker": a.worker,
                "error": json.loads(a.error) if a.error else None,
            }
            for a in attempts
        ],
    }


async def event_redrive(services: Services, args: argparse.Namespace) -> Result:
    if args.event_id:
        owner = await ConsoleReads(services.journal.pool).event_owner(args.event_id)
        if owner is None:
            raise Problem(404, "not-found", f"no event {args.event_id}")
        events = [(owner, args.event_id)]
    else:
        events = await operations.dead_matching(
            services, DeadFilter(args.client, args.since, args.until)
        )
    if args.dry_run:
        return {"dry_run": True, "matching": len(events)}
    if args.event_id:
        accepted = await operations.redrive(services, CLI_ACTOR, *events[0])
        return {"redriven": 1, "id": str(accepted.event.id), "seq": accepted.event.seq}

    def report(done: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{done}/{len(events)} redriven", end="", file=sys.stderr, flush=True)

    done = await operations.redrive_matching(services, CLI_ACTOR, events, report)
    return {"dry_run": False, "matching": len(events), "redriven": done}


async def keys_rotate(services: Services, args: argparse.Namespace) -> Result:
    if services.settings.jwt_key_file:
        raise Problem(409, "keys-from-file", "the key comes from SERIATIM_JWT_KEY_FILE")
    return {"kid": await operations.rotate_signing_key(services, CLI_ACTOR)}


async def keys_rotate_console(services: Services, args: argparse.Namespace) -> Result:
    return await operations.rotate_console_key(services, CLI_ACTOR)


async def status(services: Services, args: argparse.Namespace) -> Result:
    gauges = await services.journal.observability_gauges()
    workers = await ConsoleReads(services.journal.pool).workers(WORKER_ALIVE_WITHIN, True)
    suspended = await services.journal.mailboxes(MailboxState.SUSPENDED, None, 20)
    # The newest claim wins: a worker that lost the supervisor queue's single active consumer
    # says so with its next heartbeat, the one that took over already has.
    claims = [w for w in workers if w.supervising_since is not None]
    active = max(claims, key=lambda w: w.supervising_since or w.started_at, default=None)
    return {
        "workers": len(workers),
        "active_supervisor": None
        if active is None
        else {
            "worker": active.id,
            "hostname": active.hostname,
            "pid": active.pid,
            "since": rfc3339(active.supervising_since),
        },
        "live_workers": [
            {
                "worker": w.id,
                "hostname": w.hostname,
                "pid": w.pid,
                "mailboxes": w.load,
                "draining": w.draining,
                "supervisor": "active" if w is active else "standby",
                "started_at": rfc3339(w.started_at),
            }
            for w in workers
        ],
        "mailboxes_by_worker": {w.id: w.load for w in workers if not w.draining},
        "mailboxes": {
            "idle": gauges["idle"],
            "active": gauges["active"],
            "suspended": gauges["suspended"],
        },
        "backlog": int(gauges["backlog"]),
        "suspended": [str(row.client_id) for row in suspended],
    }


__all__: Sequence[str] = ("add_commands", "command_of", "run", "table")
