"""Light load's floors, interleaved: raw, its floors and seriatim, round after round.

bench/throughput.py measures its baselines and seriatim one after another, each once. At 4
requests in flight the two cores are busy and this machine's own speed drifts between those
phases (raw's machine CPU per event swung from 2.6 to 4.9 ms between runs), so one run's
ratios swing by 20 points and more. Here every round runs the same four phases, in the orders
of a Williams square (over every four rounds each phase takes every position once and follows
every other phase once), and each round's ratios are taken against the raw baseline of that
round:

raw:      bench/raw.py's per-event baseline (accept, confirmed publish, prefetch-1 consume,
          fenced outcome, ack), its intake in this process;
HTTP:     the same with its intake behind HTTP (`raw.run(http=True)`): the floor of anything
          that takes events over HTTP with the gateway's stack;
counted:  that floor with the attempt counted under the placement's fence before the outcome
          (`counted=True`: one HOT update, not waiting for its flush): the least a worker can
          write and keep I3's fenced start and counted attempts (docs/decisions.md);
seriatim: a gateway and `--workers` workers (bench/throughput.py's system run).

Prints each phase as it ends (stderr), each round and the medians; the figures go to
bench/results/, also those of the rounds done when a phase fails. A round of the defaults takes
2-3 minutes. Only loopback traffic; bounded by the counts given. Run it on a quiet machine, on
a private broker (bench/broker.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import raw
import throughput
from rig import load_average, write_results

from tests import harness

PHASES = ("raw", "HTTP", "counted", "seriatim")
#: A Williams square of the four phases: round n runs ORDERS[n % 4].
ORDERS = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))


def phases(args: argparse.Namespace) -> dict[str, Callable[[], dict[str, Any]]]:
    per_client = args.total // args.clients
    common = (args.clients, per_client, args.concurrency, args.workers)
    return {
        "raw": lambda: raw.run(*common, full=True),
        "HTTP": lambda: raw.run(*common, full=True, http=True),
        "counted": lambda: raw.run(*common, full=True, http=True, counted=True),
        "seriatim": lambda: throughput.system_run(*common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--total", type=int, default=6000, help="events per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="workers (raw: consumers)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between phases")
    args = parser.parse_args()
    if not (
        1 <= args.clients <= 1000
        and args.clients <= args.total <= 100000
        and 1 <= args.concurrency <= 1000
        and 1 <= args.workers <= 16
        and 1 <= args.rounds <= 20
        and 0 <= args.pause <= 600
    ):
        parser.error("counts out of range")
    if args.total % args.clients or args.rounds % len(ORDERS):
        parser.error(
            f"--total must be a multiple of --clients, and --rounds a multiple of {len(ORDERS)} "
            "(each phase in every position once)"
        )
    harness.build_template()
    run_phase = phases(args)
    rounds: list[dict[str, Any]] = []
    print(
        f"{args.clients} clients, {args.total} events per phase, {args.concurrency} in flight, "
        f"{args.workers} workers; {args.rounds} rounds of {', '.join(PHASES)} "
        "(orders of a Williams square)"
    )
    print(
        f"{'round':>5}  {'order':<32}{'raw/s':>7}{'HTTP':>7}{'counted':>9}{'seriatim':>10}"
        f"{'of counted':>12}{'load':>13}",
        flush=True,
    )
    try:
        for n in range(args.rounds):
            rounds.append(one_round(n, run_phase, args.pause))
    finally:  # the rounds done are kept, also when a phase fails
        data: dict[str, Any] = {"args": vars(args), "rounds": rounds}
        if len(rounds) == args.rounds:
            data |= report(rounds)
        print(f"results: {write_results('floors', data)}")


def one_round(
    n: int, run_phase: dict[str, Callable[[], dict[str, Any]]], pause: float
) -> dict[str, Any]:
    """Round `n`: the four phases in ORDERS[n % 4], `pause` seconds before each but the
    first of the run; its ratios against its own raw phase."""
    order = tuple(PHASES[i] for i in ORDERS[n % len(ORDERS)])
    load_start = load_average()
    results: dict[str, dict[str, Any]] = {}
    for phase in order:
        if n or phase != order[0]:
            time.sleep(pause)
        results[phase] = run_phase[phase]()
        print(
            f"  round {n + 1}, {phase}: {results[phase]['processed_per_s']:.0f}/s, load "
            f"{load_average():.2f}",
            file=sys.stderr,
            flush=True,
        )
    rate = {phase: results[phase]["processed_per_s"] for phase in PHASES}
    row = {
        "order": order,
        "per_s": rate,
        "of_raw": {phase: rate[phase] / rate["raw"] for phase in PHASES},
        "seriatim_of_counted": rate["seriatim"] / rate["counted"],
        "machine_cpu_ms_per_event": {
            phase: results[phase]["machine_cpu_ms_per_event"] for phase in PHASES
        },
        "order_violations": results["seriatim"]["order_violations"],
        # A floor whose fence refused an outcome did not do its events' work: not a floor.
        "fence_refusals": sum(results[phase]["fence_refusals"] for phase in PHASES[:3]),
        "load_average": {"start": load_start, "end": load_average()},
        "results": results,
    }
    print(
        f"{n + 1:>5}  {' > '.join(order):<32}{rate['raw']:>7.0f}"
        f"{row['of_raw']['HTTP']:>7.0%}{row['of_raw']['counted']:>9.0%}"
        f"{row['of_raw']['seriatim']:>10.0%}{row['seriatim_of_counted']:>12.0%}"
        f"{load_start:>7.2f}-{row['load_average']['end']:.2f}",
        flush=True,
    )
    return row


def report(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Print and return the medians of the rounds' ratios and machine CPU per event."""
    medians = {phase: statistics.median(r["of_raw"][phase] for r in rounds) for phase in PHASES[1:]}
    medians["seriatim_of_counted"] = statistics.median(r["seriatim_of_counted"] for r in rounds)
    cpu = {
        phase: statistics.median(r["machine_cpu_ms_per_event"][phase] for r in rounds)
        for phase in PHASES
    }
    print(
        f"medians of {len(rounds)} rounds, of raw: HTTP {medians['HTTP']:.0%}, counted "
        f"{medians['counted']:.0%}, seriatim {medians['seriatim']:.0%} "
        f"({medians['seriatim_of_counted']:.0%} of counted); machine CPU ms per event: "
        + ", ".join(f"{phase} {ms:.2f}" for phase, ms in cpu.items())
    )
    print(
        f"order violations (seriatim): {sum(r['order_violations'] for r in rounds)}; "
        f"fence refusals (raw phases): {sum(r['fence_refusals'] for r in rounds)}"
    )
    return {"medians": medians, "cpu_medians": cpu}


if __name__ == "__main__":
    main()
