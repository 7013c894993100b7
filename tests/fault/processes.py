"""Faults on the processes of a running system, and who did what in the journal.

Workers spawned with `start_workers` label their PostgreSQL connections with their process
name (`application_name`), and `install_attempt_audit` adds a trigger that records which
process started every attempt and wrote every outcome, with the database clock. Scenarios
then say "the survivor recorded it" or "the stopping worker started nothing new" exactly,
instead of guessing from timing.

The waits here run `tests.harness.wait_for` in a thread (`eventually`) so that the steady
load, which shares the test's event loop, keeps posting while a scenario waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests import witness
from tests.harness import System, wait_for

ATTEMPT_AUDIT = """
CREATE TABLE IF NOT EXISTS attempt_audit (
    event_id  uuid NOT NULL,
    client_id uuid NOT NULL,
    seq       bigint NOT NULL,
    kind      text NOT NULL,  -- 'attempt' (mark_attempt) or 'outcome' (record_outcome)
    attempt   integer NOT NULL,
    process   text NOT NULL,  -- the writer's application_name: the worker's process name
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION audit_attempt() RETURNS trigger AS $$
BEGIN
    IF NEW.attempts > OLD.attempts AND NEW.status = 'processing' THEN
        INSERT INTO attempt_audit (event_id, client_id, seq, kind, attempt, process)
        VALUES (NEW.id, NEW.client_id, NEW.seq, 'attempt', NEW.attempts,
                current_setting('application_name'));
    END IF;
    IF NEW.status IN ('succeeded', 'dead') AND NEW.finished_at IS DISTINCT FROM OLD.finished_at
    THEN
        INSERT INTO attempt_audit (event_id, client_id, seq, kind, attempt, process)
        VALUES (NEW.id, NEW.client_id, NEW.seq, 'outcome', NEW.attempts,
                current_setting('application_name'));
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_attempt ON events;
CREATE TRIGGER audit_attempt AFTER UPDATE ON events FOR EACH ROW EXECUTE FUNCTION audit_attempt();
"""

SUPERVISOR_ACTIVE = "supervisor active on worker"


@dataclasses.dataclass(frozen=True)
class Write:
    """One row of the attempt audit: who started an attempt or wrote an outcome, and when."""

    event_id: str
    client_id: str
    seq: int
    kind: str
    attempt: int
    process: str
    at: datetime.datetime


def install_attempt_audit(system: System) -> None:
    """Record every attempt start and outcome write with the writing process's name."""
    system.execute(ATTEMPT_AUDIT)


def writes(system: System, where: str = "true", *args: Any) -> list[Write]:
    """Rows of the attempt audit matching a SQL condition, oldest first."""
    rows = system.sql(
        "SELECT event_id::text, client_id::text, seq, kind, attempt, process, at "
        f"FROM attempt_audit WHERE {where} ORDER BY at",
        *args,
    )
    return [Write(**dict(row)) for row in rows]


# --- workers -------------------------------------------------------------------------------


def _labelled(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}application_name={name}"))


def spawn_worker(system: System, name: str, *args: str) -> subprocess.Popen[bytes]:
    """Start a worker process whose journal connections carry `name` as application_name;
    `args` go to `seriatim worker` (for example `--worker-id`)."""
    shared = system.env
    system.env = {
        **shared,
        "SERIATIM_DATABASE_URL": _labelled(shared["SERIATIM_DATABASE_URL"], name),
    }
    try:
        return system.spawn(name, "worker", *args)
    finally:
        system.env = shared


def start_workers(system: System, *names: str, ids: Mapping[str, str] | None = None) -> None:
    """Spawn labelled workers and wait until each has registered its heartbeat; `ids` gives
    some of them the worker id they register under."""
    for name in names:
        spawn_worker(system, name, *(["--worker-id", ids[name]] if ids and name in ids else []))
    for name in names:
        wait_for(lambda name=name: worker_id(system, name), 30, f"{name} to register")


def worker_id(system: System, name: str) -> str | None:
    """The id a worker process registered under (the `workers` row with its pid)."""
    process = system.processes[name]
    if process.poll() is not None:
        raise AssertionError(f"{name} exited with {process.returncode}:\n{system.logs()}")
    rows = system.sql("SELECT id FROM workers WHERE pid = $1", process.pid)
    return str(rows[0]["id"]) if rows else None


def hosted(system: System) -> dict[str, set[str]]:
    """Worker id → the client ids whose mailboxes are placed on it."""
    placed: dict[str, set[str]] = {}
    for row in system.sql("SELECT id::text, host FROM clients WHERE host IS NOT NULL"):
        placed.setdefault(row["host"], set()).add(row["id"])
    return placed


def log_of(system: System, name: str) -> str:
    return (system.tmp / f"{name}.log").read_text(errors="replace")


def active_supervisor(system: System) -> str | None:
    """The live worker process that most recently logged becoming the active supervisor.

    (A candidate logs it once, on its first message; one that lost the queue and got it
    back does not log again, so "most recent" is a good guess, not a proof.)
    """
    claims = [
        (supervisor_taken_at(system, name), name)
        for name, process in system.processes.items()
        if name != "gateway"
        and process.poll() is None
        and SUPERVISOR_ACTIVE in log_of(system, name)
    ]
    return max(claims)[1] if claims else None


def supervisor_taken_at(system: System, name: str) -> datetime.datetime:
    """When a process logged that its supervisor became active (its log's local clock)."""
    for line in log_of(system, name).splitlines():
        if SUPERVISOR_ACTIVE in line:
            if line.startswith("{"):  # a JSON line (SERIATIM_LOG_FORMAT=json, the default)
                return datetime.datetime.fromisoformat(json.loads(line)["timestamp"])
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.astimezone(datetime.UTC)
    raise AssertionError(f"{name} never became the active supervisor")


# --- faults --------------------------------------------------------------------------------


def now() -> datetime.datetime:
    """The wall clock, comparable with the database's timestamps (same machine)."""
    return datetime.datetime.now(datetime.UTC)


def kill(system: System, name: str) -> datetime.datetime:
    """SIGKILL a process and reap it, and tell the witness ledger; returns the moment of
    the kill."""
    process = system.processes[name]
    killed_at = now()
    process.kill()
    process.wait(timeout=10)
    witness.mark_killed(system.ledger, process.pid)
    return killed_at


def sessions(system: System, name: str) -> int:
    """How many PostgreSQL sessions a labelled process still has on the test database."""
    rows = system.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        system.database,
        name,
    )
    return int(rows[0][0])


def pause(system: System, name: str) -> datetime.datetime:
    system.processes[name].send_signal(signal.SIGSTOP)
    return now()


def resume(system: System, name: str) -> datetime.datetime:
    system.processes[name].send_signal(signal.SIGCONT)
    return now()


def broker_connection(worker: str) -> str:
    """The broker's pid of a worker's AMQP connection (by its connection_name)."""
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    wanted = f'"seriatim-worker-{worker}"'
    found = [line.split("\t")[0] for line in listing.splitlines() if wanted in line]
    assert len(found) == 1, f"expected one connection named {wanted}, found {found}"
    return found[0]


def close_broker_connection(worker: str, reason: str = "test") -> None:
    """Close a worker's AMQP connection from the broker side (as a network cut would)."""
    subprocess.run(
        ["rabbitmqctl", "close_connection", broker_connection(worker), reason],
        capture_output=True,
        check=True,
        timeout=60,
    )


def consumers(queue: str) -> list[tuple[str, bool]]:
    """The consumers of a queue: (channel pid, active?) each."""
    listing = subprocess.run(
        [
            "rabbitmqctl",
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "channel_pid",
            "active",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [
        (fields[1], fields[2] == "true")
        for fields in (line.split("\t") for line in listing.splitlines())
        if fields[0] == queue
    ]


# --- clients and waiting -------------------------------------------------------------------


def post(system: System, token: str, ms: int) -> str:
    """Post one witnessed.sleep event; its id."""
    response = httpx.post(
        f"{system.base_url}/v1/events",
        json={"type": "witnessed.sleep", "payload": {"ms": ms}},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def event(system: System, event_id: str) -> Any:
    rows = system.sql(
        "SELECT e.*, c.host, c.done_seq, c.last_seq FROM events e "
        "JOIN clients c ON c.id = e.client_id WHERE e.id = $1",
        uuid.UUID(event_id),
    )
    return rows[0]


async def eventually(condition: Callable[[], Any], within: float, what: str) -> Any:
    """`wait_for` in a thread: the event loop (and the load on it) keeps running."""
    return await asyncio.to_thread(wait_for, condition, within, what)


def seconds(later: datetime.datetime, earlier: datetime.datetime) -> float:
    return (later - earlier).total_seconds()
