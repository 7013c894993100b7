"""The outside witness: a ledger of handler executions written by the handlers themselves.

The journal records what the runtime believes it did; a test that judges order and overlap
from the journal trusts the code it tests. Test handlers instead wrap their body in
`executing(event)`, which appends a `start` and an `end` line to the file named by
`SERIATIM_TEST_LEDGER`, from inside the worker process, with CLOCK_MONOTONIC (system-wide on
Linux, so comparable across processes). `judge` then compares the ledger with what the
gateway answered: no two executions of one client at once, seqs in order, nothing lost,
nothing unexpected, nothing failed that may not.

Each line is one `os.write` on an `O_APPEND` descriptor, so lines of concurrent writers (threads,
processes) never interleave. When a test SIGKILLs a process it calls `mark_killed`: that
process's unended executions then end at the kill, with `raised` set to `KILLED`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from actors import Event

LEDGER_ENV = "SERIATIM_TEST_LEDGER"
#: `raised` of an execution whose process was SIGKILLed before its body ended.
KILLED = "SIGKILL"
#: The handler module that wraps the demo handlers in `executing` (types `witnessed.*`).
HANDLERS = "tests.witnessed_handlers"
ROOT = Path(__file__).resolve().parents[1]
SHOWN = 3


@dataclasses.dataclass(frozen=True)
class Execution:
    """One run of a handler body, as the handler itself reported it."""

    id: str
    client: str
    event: str
    seq: int
    attempt: int
    fence: int | str | None
    pid: int
    start: float
    end: float | None  # None: it never ended (still running, or lost with its process)
    raised: str | None  # the exception's type name, or KILLED


@dataclasses.dataclass(frozen=True)
class Judgement:
    """What the ledger shows against what the gateway answered; `ok` when every list is empty."""

    overlaps: list[tuple[Execution, Execution]]
    order_breaks: list[str]
    lost: list[str]
    unexpected: list[Execution]
    failed: list[Execution]
    executions: int = 0  # how many the ledger holds, for the report

    @property
    def ok(self) -> bool:
        return not (
            self.overlaps or self.order_breaks or self.lost or self.unexpected or self.failed
        )

    def __str__(self) -> str:
        problems = {
            "overlaps": [_pair(a, b) for a, b in self.overlaps],
            "order_breaks": self.order_breaks,
            "lost": self.lost,
            "unexpected": [_one(e) for e in self.unexpected],
            "failed": [f"{_one(e)} raised {e.raised}" for e in self.failed],
        }
        counts = " ".join(f"{name}={len(found)}" for name, found in problems.items())
        first = "; ".join(f"{name}: {found[:SHOWN]}" for name, found in problems.items() if found)
        return f"executions={self.executions} {counts}" + (f"; first: {first}" if first else "")

    __repr__ = __str__  # what pytest shows of `assert judgement.ok, judgement`


def environment(ledger: Path, *modules: str) -> dict[str, str]:
    """The environment a system's processes need to write `ledger` from witnessed handlers."""
    return {
        LEDGER_ENV: str(ledger),
        "SERIATIM_HANDLERS": ",".join((HANDLERS, *modules)),
        "PYTHONPATH": str(ROOT),
    }


@contextlib.contextmanager
def executing(event: Event) -> Iterator[None]:
    """Record the body as one execution of `event`: a start line, then an end line (with the
    exception's type name when it raises, cancellation included). Writes nothing when
    SERIATIM_TEST_LEDGER is unset."""
    ledger = os.environ.get(LEDGER_ENV)
    if not ledger:
        yield
        return
    execution = uuid.uuid4().hex
    _append(ledger, {"kind": "start", **_describe(event, execution)})
    raised = None
    try:
        yield
    except BaseException as error:
        raised = type(error).__name__
        raise
    finally:
        _append(ledger, {"kind": "end", "id": execution, "pid": os.getpid(), "raised": raised})


def mark_killed(path: Path, pid: int) -> None:
    """Record that `pid` was SIGKILLed now: its unended executions end here."""
    _append(str(path), {"kind": "killed", "pid": pid})


def _describe(event: Event, execution: str) -> dict[str, Any]:
    return {
        "id": execution,
        "client": str(event.client_id),
        "event": str(event.id),
        "seq": event.seq,
        "attempt": event.attempt,
        "fence": getattr(event, "fence", None),
        "pid": os.getpid(),
    }


def _append(ledger: str, line: dict[str, Any]) -> None:
    data = (json.dumps({**line, "t": time.monotonic()}, default=str) + "\n").encode()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write: concurrent lines never interleave
    finally:
        os.close(fd)


def read(path: Path) -> list[Execution]:
    """Every execution in the ledger, in the order they started (empty if there is none)."""
    if not path.exists():
        return []
    started: dict[str, Execution] = {}
    for text in path.read_text().splitlines():
        line = json.loads(text)
        if line["kind"] == "start":
            started[line["id"]] = _started(line)
        elif line["kind"] == "end":
            started[line["id"]] = dataclasses.replace(
                started[line["id"]], end=line["t"], raised=line["raised"]
            )
        else:
            _killed(started, line["pid"], line["t"])
    return sorted(started.values(), key=lambda e: e.start)


def _started(line: dict[str, Any]) -> Execution:
    fields = {f.name for f in dataclasses.fields(Execution)} - {"start", "end", "raised"}
    return Execution(
        **{name: line[name] for name in fields}, start=line["t"], end=None, raised=None
    )


def _killed(started: dict[str, Execution], pid: int, at: float) -> None:
    for key, execution in started.items():
        if execution.pid == pid and execution.end is None:
            started[key] = dataclasses.replace(execution, end=at, raised=KILLED)


def only(path: Path, clients: Collection[str], into: Path) -> Path:
    """Copy the ledger lines of `clients` (and every kill) to `into`, for a test that shares
    its system, and so its ledger, with other tests."""
    ours: set[str] = set()
    kept = []
    for text in path.read_text().splitlines() if path.exists() else []:
        line = json.loads(text)
        if line["kind"] == "start" and line["client"] in clients:
            ours.add(line["id"])
        if line["kind"] == "killed" or line["id"] in ours:
            kept.append(text + "\n")
    into.write_text("".join(kept))
    return into


def judge(
    path: Path,
    answered: Mapping[str, Sequence[tuple[int, str]]],
    *,
    may_fail: bool = False,
) -> Judgement:
    """Judge the ledger at `path` against `answered` (client id → the (seq, event id) pairs
    the gateway answered 202 for, in the order posted). With `may_fail`, executions that
    raised are allowed (the load has handlers that fail)."""
    executions = read(path)
    by_client: dict[str, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_client[execution.client].append(execution)
    return Judgement(
        overlaps=[pair for runs in by_client.values() for pair in _overlaps(runs)],
        order_breaks=_order_breaks(by_client, answered),
        lost=_lost(executions, answered),
        unexpected=_unexpected(executions, answered),
        failed=[] if may_fail else [e for e in executions if e.raised not in (None, KILLED)],
        executions=len(executions),
    )


def _ended(execution: Execution) -> float:
    return math.inf if execution.end is None else execution.end


def _overlaps(runs: list[Execution]) -> list[tuple[Execution, Execution]]:
    """Each execution that starts before an earlier-started one of the client has ended,
    paired with the one it overlaps (runs are sorted by start)."""
    found = []
    longest: Execution | None = None
    for run in runs:
        if longest is not None and run.start < _ended(longest):
            found.append((longest, run))
        if longest is None or _ended(run) > _ended(longest):
            longest = run
    return found


def _order_breaks(
    by_client: Mapping[str, list[Execution]], answered: Mapping[str, Sequence[tuple[int, str]]]
) -> list[str]:
    breaks = []
    for client, pairs in answered.items():
        seqs = [seq for seq, _ in pairs]
        if seqs != sorted(set(seqs)):
            breaks.append(f"client {client}: answered seqs {seqs[:10]} are not increasing")
    for client, runs in by_client.items():
        breaks += _runs_out_of_order(client, runs, dict(answered.get(client, ())))
    return breaks


def _runs_out_of_order(client: str, runs: list[Execution], seqs: Mapping[int, str]) -> list[str]:
    """Runs of a later seq that started before a run of an earlier seq ended, and runs whose
    seq is not the one the gateway answered for their event."""
    breaks = []
    last_end: dict[int, float] = defaultdict(lambda: -math.inf)
    for run in runs:
        last_end[run.seq] = max(last_end[run.seq], _ended(run))
        if run.seq in seqs and seqs[run.seq] != run.event:
            breaks.append(f"client {client}: event {run.event} ran as seq {run.seq}")
    earlier_end, earliest = -math.inf, 0
    for seq in sorted(last_end):
        for run in (r for r in runs if r.seq == seq and r.start < earlier_end):
            breaks.append(
                f"client {client}: seq {seq} ({_one(run)}) started before seq {earliest} ended"
            )
        if last_end[seq] > earlier_end:
            earlier_end, earliest = last_end[seq], seq
    return breaks


def _lost(
    executions: list[Execution], answered: Mapping[str, Sequence[tuple[int, str]]]
) -> list[str]:
    """Answered events no execution of which ended by itself (a kill does not finish one)."""
    finished = {e.event for e in executions if e.end is not None and e.raised != KILLED}
    return [
        f"client {client} seq {seq} event {event}"
        for client, pairs in answered.items()
        for seq, event in pairs
        if event not in finished
    ]


def _unexpected(
    executions: list[Execution], answered: Mapping[str, Sequence[tuple[int, str]]]
) -> list[Execution]:
    expected = {(client, event) for client, pairs in answered.items() for _, event in pairs}
    return [e for e in executions if (e.client, e.event) not in expected]


def _one(execution: Execution) -> str:
    return (
        f"seq {execution.seq} attempt {execution.attempt} pid {execution.pid} "
        f"[{execution.start:.3f}, {_ended(execution):.3f}]"
    )


def _pair(a: Execution, b: Execution) -> str:
    return f"client {a.client}: {_one(a)} and {_one(b)}"
