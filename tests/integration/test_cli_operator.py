"""The operator's command line: client, mailbox, event, keys and status commands against a
running system, through the same operations as the admin API (so audited, as the command
line), JSON with --json and a table otherwise, and a clear message with a non-zero exit for
bad arguments. On the starting code none of these commands exist (argparse exits 2)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
import uuid
from typing import Any

import pytest

from actors.settings import Settings
from gateway import operations
from seriatim.operator import operator_services
from tests.harness import System, wait_for

pytestmark = pytest.mark.integration
CLI_ACTOR = "00000000-0000-0000-0000-000000000000"
CLI_UUID = uuid.UUID(CLI_ACTOR)


def seriatim(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seriatim", *args],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(system: System, *args: str) -> Any:
    done = seriatim(system, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli_entries(system: System, action: str) -> list[Any]:
    return system.sql(
        "SELECT client_id::text, event_id::text, detail FROM audit_log "
        "WHERE actor = $1::uuid AND action = $2 ORDER BY id",
        CLI_ACTOR,
        action,
    )


def test_mailbox_commands_suspend_and_resume_audited_as_the_command_line(
    system: System,
) -> None:
    tenant = system.create_client("cli-mailbox")
    cid = tenant["client_id"]
    suspended = as_json(system, "mailbox", "suspend", cid, "--reason", "maintenance")
    assert suspended["state"] == "suspended"
    assert suspended["suspended_reason"] == "operator: maintenance"
    again = seriatim(system, "mailbox", "suspend", cid, "--reason", "twice")
    assert again.returncode == 1
    assert "suspended already" in again.stderr
    listed = as_json(system, "mailbox", "list", "--state", "suspended")
    assert cid in [m["client_id"] for m in listed]
    assert as_json(system, "mailbox", "resume", cid)["state"] != "suspended"
    [entry] = cli_entries(system, "mailbox.suspend")
    assert entry["client_id"] == cid
    detail = json.loads(entry["detail"])
    assert detail["via"] == "cli"
    assert detail["reason"] == "maintenance"
    assert [e["client_id"] for e in cli_entries(system, "mailbox.resume")] == [cid]
    table = seriatim(system, "mailbox", "show", cid)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["client_id", cid]


def test_client_create_is_audited_with_the_user_who_ran_it_not_the_one_named_in_env(
    system: System,
) -> None:
    """`client create` wrote the client directly (no audit entry), and the command line's user
    came from $USER, which anyone running it can set."""
    done = subprocess.run(
        [sys.executable, "-m", "seriatim", "client", "create", "--name", "cli-made", "--admin"],
        env={**system.env, "USER": "somebody-else", "LOGNAME": "somebody-else"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    [entry] = [
        e for e in cli_entries(system, "client.create") if e["client_id"] == made["client_id"]
    ]
    detail = json.loads(entry["detail"]) if isinstance(entry["detail"], str) else entry["detail"]
    assert detail["name"] == "cli-made"
    assert detail["admin"] is True
    assert detail["via"] == "cli"
    assert detail["os_user"] == pwd.getpwuid(os.geteuid()).pw_name
    assert made["client_secret"] not in json.dumps(detail)


def test_client_commands_list_show_and_rotate(system: System) -> None:
    tenant = system.create_client("cli-client")
    cid = tenant["client_id"]
    assert cid in [c["client_id"] for c in as_json(system, "client", "list", "--name", "cli-cl")]
    table = seriatim(system, "client", "list")
    assert table.stdout.splitlines()[0].split()[:3] == ["CLIENT_ID", "NAME", "STATE"]
    assert as_json(system, "client", "show", cid)["name"] == "cli-client"
    rotated = seriatim(system, "client", "rotate-secret", cid)
    assert rotated.returncode == 0
    secret = json.loads(rotated.stdout)["client_secret"]
    assert system.token({"client_id": cid, "client_secret": secret})
    [entry] = [e for e in cli_entries(system, "client.rotate_secret") if e["client_id"] == cid]
    assert secret not in entry["detail"]
    assert seriatim(system, "client", "disable", cid).returncode == 0
    assert [e["client_id"] for e in cli_entries(system, "client.settings")][-1] == cid


def test_event_commands_show_and_redrive_by_filter_with_a_dry_run(system: System) -> None:
    tenant = system.create_client("cli-events")
    cid = tenant["client_id"]
    token = system.token(tenant)
    dead = [system.post_event(token, "demo.fail", {"times": 1000}) for _ in range(2)]

    def all_dead() -> bool:
        rows = system.sql(
            "SELECT count(*) FROM events WHERE client_id = $1::uuid AND status = 'dead'", cid
        )
        return rows[0][0] == 2

    wait_for(all_dead, 120, "both events to end dead")
    shown = as_json(system, "event", "show", dead[0]["id"])
    assert shown["status"] == "dead"
    assert shown["error"]["type"] == "RuntimeError"
    log = shown["attempt_log"]  # demo.fail fails every attempt: each has its error and worker
    assert [a["attempt"] for a in log] == list(range(1, shown["attempts"] + 1))
    assert all(a["error"]["type"] == "RuntimeError" and a["duration_ms"] >= 0 for a in log)
    assert all(a["worker"] for a in log)
    readable = seriatim(system, "event", "show", dead[0]["id"])
    assert readable.returncode == 0, readable.stderr
    rows = readable.stdout.split("attempt_log\n", 1)[1].splitlines()
    assert rows[0].split() == ["ATTEMPT", "STARTED_AT", "DURATION_MS", "WORKER", "ERROR"]
    assert len(rows) == 1 + shown["attempts"]
    assert as_json(system, "event", "redrive", "--client", cid, "--dry-run") == {
        "dry_run": True,
        "matching": 2,
    }
    assert cli_entries(system, "event.redrive") == []
    done = as_json(system, "event", "redrive", "--client", cid)
    assert done == {"dry_run": False, "matching": 2, "redriven": 2}
    assert [e["event_id"] for e in cli_entries(system, "event.redrive")] == [d["id"] for d in dead]
    # Run again: the originals, redriven already, are left out (their copies may be dead too)
    as_json(system, "event", "redrive", "--client", cid)
    copies = system.sql(
        "SELECT count(*) FROM events WHERE redrive_of = ANY($1::uuid[])", [d["id"] for d in dead]
    )
    assert copies[0][0] == 2
    # A second job whose list was made before the first ran (a double click, two operators at
    # once) redrives nothing again: each event is redriven at most once by filter
    late = [(uuid.UUID(cid), uuid.UUID(d["id"])) for d in dead]
    assert asyncio.run(_redrive_matching(system, late)) == 0
    copies = system.sql(
        "SELECT count(*) FROM events WHERE redrive_of = ANY($1::uuid[])", [d["id"] for d in dead]
    )
    assert copies[0][0] == 2


async def _redrive_matching(system: System, events: list[tuple[uuid.UUID, uuid.UUID]]) -> int:
    settings = Settings.from_env(system.env)
    async with operator_services(settings, broker=True) as services:
        return await operations.redrive_matching(services, CLI_UUID, events)


def test_keys_rotate_and_status(system: System) -> None:
    kid = as_json(system, "keys", "rotate")["kid"]
    assert json.loads(cli_entries(system, "signing_key.rotate")[-1]["detail"])["kid"] == kid
    state = as_json(system, "status")
    assert state["workers"] >= 2
    assert {"backlog", "mailboxes", "suspended"} <= set(state)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["mailbox", "suspend", CLI_ACTOR], 2, "the following arguments are required: --reason"),
        (["client", "show", "nope"], 2, "'nope' is not a client id"),
        (["event", "redrive"], 1, "give an event id, or a filter"),
        (["event", "redrive", "--since", "yesterday"], 2, "is not a time"),
        (["mailbox", "list", "--limit", "0"], 2, "must be between 1 and 1000"),
        (["mailbox", "resume", CLI_ACTOR], 1, "no such mailbox"),
    ],
)
def test_bad_arguments_get_a_clear_message_and_a_non_zero_exit(
    system: System, args: list[str], code: int, message: str
) -> None:
    done = seriatim(system, *args)
    assert done.returncode == code
    assert message in done.stderr
