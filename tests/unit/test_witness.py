"""The witness ledger: what `executing` writes, and what `judge` finds in crafted ledgers."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from actors import Event
from tests import witness

CLIENT = "c1"


class Ledger:
    """Writes crafted ledger lines with chosen times (what handlers and the harness write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def line(self, **fields: Any) -> None:
        with self.path.open("a") as ledger:
            ledger.write(json.dumps(fields) + "\n")

    def run(
        self,
        seq: int,
        start: float,
        end: float | None,
        *,
        client: str = CLIENT,
        event: str | None = None,
        attempt: int = 1,
        pid: int = 100,
        raised: str | None = None,
    ) -> str:
        self.count += 1
        run = f"x{self.count}"
        self.line(
            kind="start", id=run, client=client, event=event or f"e{seq}", seq=seq,
            attempt=attempt, fence=None, pid=pid, t=start,
        )  # fmt: skip
        if end is not None:
            self.line(kind="end", id=run, pid=pid, raised=raised, t=end)
        return run


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.jsonl")


def answered(*seqs: int, client: str = CLIENT) -> dict[str, list[tuple[int, str]]]:
    return {client: [(seq, f"e{seq}") for seq in seqs]}


def event(seq: int = 1, attempt: int = 1) -> Event:
    return Event(uuid.uuid4(), uuid.uuid4(), seq, "t", {}, attempt, fence=4)


# --- what executing writes -----------------------------------------------------------------


def test_executing_records_a_start_and_an_end_with_the_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(witness.LEDGER_ENV, str(path))
    handled = event(seq=7, attempt=2)

    with witness.executing(handled):
        pass

    (run,) = witness.read(path)
    assert (run.client, run.event, run.seq, run.attempt) == (
        str(handled.client_id),
        str(handled.id),
        7,
        2,
    )
    assert (run.pid, run.fence, run.raised) == (os.getpid(), 4, None)
    assert run.end is not None
    assert run.start <= run.end


def test_executing_records_the_type_of_what_the_body_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(witness.LEDGER_ENV, str(path))

    with pytest.raises(ZeroDivisionError), witness.executing(event()):
        _ = 1 / 0

    assert [run.raised for run in witness.read(path)] == ["ZeroDivisionError"]


async def test_executing_records_a_cancelled_coroutine_and_threads_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(witness.LEDGER_ENV, str(path))

    async def hangs() -> None:
        with witness.executing(event(seq=1)):
            await asyncio.sleep(60)

    def blocks() -> None:
        with witness.executing(event(seq=2)):
            threading.Event().wait(0.01)

    threads = [threading.Thread(target=blocks) for _ in range(8)]
    for thread in threads:
        thread.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(hangs(), 0.05)
    for thread in threads:
        thread.join()

    runs = witness.read(path)
    assert len(runs) == 9
    assert all(run.end is not None for run in runs)
    assert [run.raised for run in runs if run.seq == 1] == ["CancelledError"]


def test_executing_writes_nothing_without_a_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(witness.LEDGER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)

    with witness.executing(event()):
        pass

    assert list(tmp_path.iterdir()) == []


# --- what judge finds ----------------------------------------------------------------------


def test_runs_one_after_another_in_seq_order_are_ok(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 1.0, attempt=1, raised="RuntimeError")
    ledger.run(1, 1.5, 2.0, attempt=2)
    ledger.run(2, 2.0, 3.0)

    judgement = witness.judge(ledger.path, answered(1, 2), may_fail=True)

    assert judgement.ok, judgement
    assert judgement.executions == 3


def test_two_runs_of_one_client_at_once_are_an_overlap(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 2.0)
    ledger.run(2, 1.0, 3.0)

    judgement = witness.judge(ledger.path, answered(1, 2))

    assert [(a.seq, b.seq) for a, b in judgement.overlaps] == [(1, 2)]
    assert not judgement.ok
    assert "overlaps=1" in str(judgement)


def test_two_runs_of_one_event_at_once_are_an_overlap(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 2.0, pid=100)
    ledger.run(1, 1.0, 3.0, pid=200, attempt=2)

    judgement = witness.judge(ledger.path, answered(1))

    assert len(judgement.overlaps) == 1
    assert judgement.order_breaks == []


def test_runs_of_different_clients_may_overlap(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 2.0, client="a", event="a1")
    ledger.run(1, 1.0, 3.0, client="b", event="b1")

    judgement = witness.judge(ledger.path, {"a": [(1, "a1")], "b": [(1, "b1")]})

    assert judgement.ok, judgement


def test_a_later_seq_run_before_an_earlier_one_is_an_order_break(ledger: Ledger) -> None:
    ledger.run(2, 0.0, 1.0)
    ledger.run(1, 1.0, 2.0)

    judgement = witness.judge(ledger.path, answered(1, 2))

    assert judgement.overlaps == []
    assert len(judgement.order_breaks) == 1
    assert "seq 2" in judgement.order_breaks[0]


def test_a_retry_of_an_earlier_seq_after_a_later_one_started_is_an_order_break(
    ledger: Ledger,
) -> None:
    # The journal would show seq 1 finished (its last attempt) before seq 2's recorded start
    # only if it trusted the attempt it was told about; the ledger has every run.
    ledger.run(1, 0.0, 1.0, attempt=1, raised="RuntimeError")
    ledger.run(2, 1.1, 1.2)
    ledger.run(1, 1.3, 1.4, attempt=2)

    judgement = witness.judge(ledger.path, answered(1, 2), may_fail=True)

    assert len(judgement.order_breaks) == 1, judgement


def test_seqs_answered_out_of_posting_order_are_an_order_break(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 1.0)
    ledger.run(2, 1.0, 2.0)

    judgement = witness.judge(ledger.path, {CLIENT: [(2, "e2"), (1, "e1")]})

    assert len(judgement.order_breaks) == 1
    assert "not increasing" in judgement.order_breaks[0]


def test_an_event_run_under_another_seq_is_an_order_break(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 1.0, event="e2")
    ledger.run(2, 1.0, 2.0, event="e1")

    judgement = witness.judge(ledger.path, answered(1, 2))

    assert len(judgement.order_breaks) == 2, judgement


def test_an_answered_event_that_never_ran_is_lost(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 1.0)

    judgement = witness.judge(ledger.path, answered(1, 2))

    assert judgement.lost == ["client c1 seq 2 event e2"]


def test_a_run_that_never_ended_does_not_finish_its_event(ledger: Ledger) -> None:
    ledger.run(1, 0.0, None)

    judgement = witness.judge(ledger.path, answered(1))

    assert len(judgement.lost) == 1


def test_a_run_of_an_event_nobody_was_answered_for_is_unexpected(ledger: Ledger) -> None:
    # Duplicate intake: the same request journaled twice, answered once
    ledger.run(1, 0.0, 1.0)
    ledger.run(2, 1.0, 2.0, event="e1-again")

    judgement = witness.judge(ledger.path, answered(1))

    assert [run.event for run in judgement.unexpected] == ["e1-again"]


def test_a_run_that_raised_is_a_failure_unless_the_load_may_fail(ledger: Ledger) -> None:
    ledger.run(1, 0.0, 1.0, raised="ValueError")

    assert len(witness.judge(ledger.path, answered(1)).failed) == 1
    assert witness.judge(ledger.path, answered(1), may_fail=True).ok


def test_a_sigkilled_process_s_open_run_ends_at_the_kill(ledger: Ledger) -> None:
    # Given a worker killed mid-handler, and the survivor running the event again after it
    ledger.run(1, 0.0, None, pid=100)
    witness.mark_killed(ledger.path, 100)
    killed_at = witness.read(ledger.path)[0].end
    assert killed_at is not None
    ledger.run(1, killed_at + 0.5, killed_at + 1.0, pid=200, attempt=2)
    ledger.run(2, killed_at + 1.0, killed_at + 2.0, pid=200)

    runs = witness.read(ledger.path)
    judgement = witness.judge(ledger.path, answered(1, 2))

    assert runs[0].raised == witness.KILLED
    assert judgement.ok, judgement


def test_a_killed_run_is_not_a_finished_one(ledger: Ledger) -> None:
    ledger.run(1, 0.0, None, pid=100)
    witness.mark_killed(ledger.path, 100)

    judgement = witness.judge(ledger.path, answered(1))

    assert len(judgement.lost) == 1
    assert judgement.failed == []


def test_a_run_open_in_a_process_never_killed_overlaps_everything_after_it(
    ledger: Ledger,
) -> None:
    ledger.run(1, 0.0, None, pid=100)
    witness.mark_killed(ledger.path, 999)  # another process
    ledger.run(1, 5.0, 6.0, pid=200, attempt=2)

    judgement = witness.judge(ledger.path, answered(1))

    assert len(judgement.overlaps) == 1


def test_only_keeps_the_runs_of_the_clients_named(ledger: Ledger, tmp_path: Path) -> None:
    ledger.run(1, 0.0, 1.0, client="ours", event="o1")
    ledger.run(1, 0.0, 1.0, client="theirs", event="t1")
    witness.mark_killed(ledger.path, 100)

    ours = witness.only(ledger.path, {"ours"}, tmp_path / "ours.jsonl")

    assert [run.client for run in witness.read(ours)] == ["ours"]
    assert witness.judge(ours, {"ours": [(1, "o1")]}).ok
