"""The system of the cluster suite, its load balancer, and how a scenario is ridden out.

Two gateways and three workers, all told of every node of the cluster (SERIATIM_AMQP_URL
lists the three), on quorum mailbox queues (three replicas: one per node). The load reaches
the gateways through a round-robin balancer that skips a gateway refusing connections, as a
load balancer would. Every scenario is judged as tests/fault judges one (oracle + witness),
over everything the module's load was answered so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.cluster.rabbit_cluster import RabbitCluster
from tests.fault.load import Load
from tests.fault.oracle import all_terminal, check, install_audit
from tests.fault.recovery import dead_processes, eventually, now, terminal_since
from tests.harness import System, free_port, running_system, wait_for

CLIENTS = 6
PER_SECOND = 20.0  # modest: two cores run three nodes, five processes and the database


class Balancer(httpx.AsyncBaseTransport):
    """Round-robin over the gateways' ports; a refused connection goes to the next one."""

    def __init__(self, ports: list[int]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._ports = ports
        self._next = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        error: httpx.ConnectError | None = None
        for _ in self._ports:
            port = self._ports[self._next % len(self._ports)]
            self._next += 1
            request.url = request.url.copy_with(port=port)
            try:
                return await self._inner.handle_async_request(request)
            except httpx.ConnectError as refused:
                error = refused
        assert error is not None
        raise error

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclasses.dataclass
class Rig:
    system: System
    cluster: RabbitCluster
    second_port: int
    #: What every scenario's load was answered, for the oracle (it judges the whole journal).
    answered: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def spawn_second_gateway(self) -> None:
        self.system.spawn("gateway-2", "gateway", env={"SERIATIM_HTTP_PORT": str(self.second_port)})
        wait_for(lambda: _ready(self.second_port), 60, "the second gateway to be ready")

    def ensure_gateways(self) -> None:
        if self.system.processes["gateway-2"].poll() is not None:
            self.spawn_second_gateway()

    def spread(self) -> None:
        """Until the three workers are on three nodes and the two gateways on two: each
        process starts at a random node, so a crowded node's extra process has its
        connection closed by the broker, and moves to the next node (as a process whose node
        drops it does)."""
        for _ in range(20):
            crowded = [
                names[1:]
                for kind in ("worker", "gateway")
                for names in (
                    [p for p in procs if p.startswith(f"seriatim-{kind}")]
                    for procs in self.placement().values()
                )
                if len(names) > 1
            ]
            if not crowded:
                return
            self.move(crowded[0][0])
        raise AssertionError(f"processes not spread over the nodes: {self.placement()}")

    def balancer(self) -> Balancer:
        return Balancer([self.system.port, self.second_port])

    def placement(self) -> dict[str, list[str]]:
        return self.cluster.placement()

    def move(self, process: str) -> None:
        """Cut `process`'s connection from the broker's side; wait until it is on another
        node."""
        was = self.node_of(process)
        self.cluster.close_connection(process)
        wait_for(lambda: self.node_of(process) not in (None, was), 30, f"{process} to move")

    def node_of(self, process: str) -> str | None:
        """The node the process named `process` is connected to, if any."""
        return next((node for node, procs in self.placement().items() if process in procs), None)

    def connected(self) -> set[str]:
        """The connection names of the processes connected to some node."""
        return {name for names in self.placement().values() for name in names}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_rig(tmp: Path, cluster: RabbitCluster) -> Iterator[Rig]:
    env = {"SERIATIM_QUEUE_TYPE": "quorum"}
    with running_system(tmp, workers=3, env=env, amqp_url=cluster.url) as system:
        rig = Rig(system, cluster, free_port())
        rig.spawn_second_gateway()
        install_audit(system)
        try:
            wait_for(lambda: len(rig.connected()) == 5, 30, "every process to connect")
            rig.spread()
        finally:
            print(f"\n[cluster] processes per node: {rig.placement()}")
        try:
            yield rig
        finally:
            cluster.ensure_running()  # so that the system leaves cleanly


@dataclasses.dataclass(frozen=True)
class Figures:
    """What a scenario measured: events accepted while the fault lasted, and the longest
    time any of the load's mailboxes went without an outcome across it."""

    name: str
    accepted_during: int
    fault_seconds: float
    longest_stall: float
    stalled_mailbox: str
    healed: int

    def __str__(self) -> str:
        return (
            f"[{self.name}] fault lasted {self.fault_seconds:.1f} s; events accepted during "
            f"it: {self.accepted_during}; every mailbox processing again after at most "
            f"{self.longest_stall:.2f} s without an outcome ({self.stalled_mailbox}); "
            f"quorum queues left without a leader (rabbitmq/rabbitmq-server#10070), elected "
            f"by hand: {self.healed}"
        )


#: A fault: does its damage and undoes it, given the running load; returns how many quorum
#: queues needed an election by hand (rabbitmq/rabbitmq-server#10070) on the way.
Fault = Callable[[Load], int]


async def ride_out(rig: Rig, name: str, fault: Fault) -> Figures:
    """Steady load through `fault`; then every event is terminal and the oracle finds
    nothing lost, duplicated, out of order, overlapping or with a gap."""
    system = rig.system
    started = now()
    load = Load(system, clients=CLIENTS, per_second=PER_SECOND, transport=rig.balancer())
    await load.prepare()
    running = asyncio.create_task(load.run())
    try:
        await eventually(lambda: terminal_since(system, started) >= 20, 60, "the load to flow")
        before, fault_at, clock = set(load.accepted), now(), time.monotonic()
        healed = await asyncio.to_thread(fault, load)
        took, back = time.monotonic() - clock, now()
        during = len(load.accepted - before)
        clients = list(load.answered)
        await eventually(
            lambda: every_mailbox_since(system, clients, back), 120, "every mailbox to process"
        )
    except BaseException:
        running.cancel()
        raise
    finally:
        load.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    rig.answered.update(load.answered)
    await eventually(lambda: all_terminal(system), 120, "all events to finish")
    report = check(system, rig.answered, may_fail=False)
    stall, mailbox = longest_stall(system, list(load.answered), fault_at)
    figures = Figures(name, during, took, stall, mailbox, healed)
    print(f"\n{figures}; HTTP statuses {load.statuses}; {report}")
    assert report.ok, report
    assert not dead_processes(system), f"processes died: {dead_processes(system)}"
    return figures


def every_mailbox_since(system: System, clients: list[str], moment: datetime.datetime) -> bool:
    """Every one of `clients` has an event that finished after `moment`."""
    rows = system.sql(
        "SELECT count(DISTINCT client_id) FROM events "
        "WHERE client_id::text = ANY($1) AND finished_at > $2",
        clients,
        moment,
    )
    return int(rows[0][0]) == len(clients)


def longest_stall(
    system: System, clients: list[str], fault_at: datetime.datetime
) -> tuple[float, str]:
    """The longest gap between consecutive outcomes of one mailbox that spans a moment after
    `fault_at`: how long the worst-hit mailbox waited to process again. (client, seconds)."""
    rows = system.sql(
        "SELECT client_id::text AS client, finished_at FROM events "
        "WHERE client_id::text = ANY($1) ORDER BY client_id, finished_at",
        clients,
    )
    worst, who = 0.0, ""
    previous: dict[str, datetime.datetime] = {}
    for row in rows:
        last = previous.get(row["client"])
        if last is not None and row["finished_at"] > fault_at:
            gap = (row["finished_at"] - max(last, fault_at)).total_seconds()
            if gap > worst:
                worst, who = gap, row["client"]
        previous[row["client"]] = row["finished_at"]
    return worst, who
