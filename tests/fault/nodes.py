"""Private RabbitMQ and PostgreSQL instances that fault tests may stop, kill and restart.

The machine's shared services (PostgreSQL on 5432, RabbitMQ on 5672) are never touched: a
private RabbitMQ node and a private PostgreSQL cluster run on free ports with their own data,
are started once per test session and removed at its end. Their names carry the pid of the
pytest process that owns them, so a later session removes what a killed one left behind.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import IN_CI, free_port

RABBIT_PREFIX = "seriatim-fault-"
PG_PREFIX = "seriatim_fault_"
OWNER = "SERIATIM_FAULT_OWNER"  # in each private beam's environment: the owning pytest pid


def unavailable(reason: str) -> None:
    """Skip locally when a private service cannot be had, but fail under CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: fault tests must not skip)")
    pytest.skip(reason)


#: How many times each command ran in this process (the cluster suite prints it): a
#: rabbitmqctl call boots an Erlang VM, 1-6 s on a busy 2-core machine.
commands_run: collections.Counter[str] = collections.Counter()


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command; raise with its output when it fails."""
    commands_run[Path(args[0]).name] += 1
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _stale(owner: int) -> bool:
    """Left behind by a pytest session that is gone (or by an earlier one with our pid)."""
    return owner == os.getpid() or not _alive(owner)


#: What this process has swept already: a second sweep would take this session's own nodes
#: (owned by our pid) for an earlier session's, and remove them under a running test.
_swept: set[str] = set()


def _sweep_once(kind: str, sweep: Callable[[], None]) -> None:
    if kind not in _swept:
        sweep()
        _swept.add(kind)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} still runs after {timeout:.0f} s")
        time.sleep(0.05)


# --- RabbitMQ -----------------------------------------------------------------------------


class RabbitNode:
    """A RabbitMQ node of its own: name, ports, data, logs and Erlang cookie."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.name = f"{root.name}@localhost"  # unique: a test may run two nodes at once
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.pid: int | None = None
        self._bin = bin_dir
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (root / "enabled_plugins").write_text("[].\n")
        self._env = {
            **os.environ,
            "HOME": str(root),  # the node's and rabbitmqctl's own Erlang cookie
            "ERL_CRASH_DUMP": str(root / "erl_crash.dump"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            OWNER: str(os.getpid()),
        }

    def ctl(self, *args: str) -> str:
        return _run(
            [str(self._bin / "rabbitmqctl"), "-q", "-n", self.name, *args], self._env, self.root
        )

    def start(self, timeout: float = 120) -> None:
        """Boot the node (`rabbitmq-server -detached`) and wait until it serves.

        Until the node listens for AMQP the wait is a socket probe, not rabbitmqctl: each
        rabbitmqctl call boots an Erlang VM of its own (1-6 s on a busy 2-core machine), and a
        poll of them takes the CPU from the nodes booting beside it."""
        _run([str(self._bin / "rabbitmq-server"), "-detached"], self._env, self.root)
        deadline = time.monotonic() + timeout
        while not self.listening():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"RabbitMQ node {self.name} did not start in {timeout:.0f} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.1)
        self.ctl("await_startup", "--timeout", "60")  # the boot steps after the listeners
        # rabbit's prelaunch writes it at every boot, before the listeners start
        self.pid = int((self.root / "mnesia" / f"{self.name}.pid").read_text().strip())

    def listening(self) -> bool:
        """The node accepts AMQP connections (its application runs: stop_app closes them)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop_app(self) -> None:
        """Stop the RabbitMQ application; the Erlang node stays up."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def kill(self) -> None:
        """kill -9 of the node's beam process."""
        assert self.pid is not None, "the node was never started"
        os.kill(self.pid, signal.SIGKILL)
        _wait_gone(self.pid, 10)

    def heal_quorum_queues(self, grace: float) -> int:
        """Trigger an election for each quorum queue still without a leader after `grace` s.

        Works around rabbitmq/rabbitmq-server#10070: after kill -9 of a single node, RabbitMQ
        3.10 sometimes restarts a quorum queue's Raft member that never calls an election, and
        the queue answers nothing until an operator runs `ra:trigger_election` (the workaround
        named in that issue; docs/reliability.md). Returns how many queues needed it.
        """
        deadline = time.monotonic() + grace
        while int(self.ctl("eval", _LEADERLESS.replace("ACTION", "ok"))):
            if time.monotonic() > deadline:
                return int(
                    self.ctl("eval", _LEADERLESS.replace("ACTION", "ra:trigger_election(Id)"))
                )
            time.sleep(0.5)
        return 0

    def ensure_running(self) -> None:
        """Whatever a scenario did to it, the node serves again afterwards."""
        if self.pid is not None and _alive(self.pid):
            if not self.listening():  # a probe, not a rabbitmqctl call, when all is well
                self.start_app()
        else:
            self.start()

    def remove(self) -> None:
        """Shut the node down (kill it if it will not stop) and delete its files."""
        if self.pid is not None and _alive(self.pid):
            try:
                self.ctl("shutdown")
            except (RuntimeError, subprocess.TimeoutExpired):
                os.kill(self.pid, signal.SIGKILL)
                _wait_gone(self.pid, 10)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted((self.root / "log").glob("*.log"))
        text = "\n".join(path.read_text(errors="replace") for path in logs)
        return "\n".join(text.splitlines()[-lines:])


def start_killed(node: RabbitNode) -> None:
    """Start a node after kill -9; on quorum queues also play the operator for
    rabbitmq/rabbitmq-server#10070 (see RabbitNode.heal_quorum_queues)."""
    node.start()
    if os.environ.get("SERIATIM_QUEUE_TYPE") == "quorum":
        healed = node.heal_quorum_queues(grace=10)
        print(f"\n[broker kill -9] quorum queues left without a leader, elected by hand: {healed}")


#: Erlang run by `rabbitmqctl eval`: ACTION for each quorum queue without a leader; the count.
_LEADERLESS = """
lists:foldl(
    fun(Q, N) ->
        {Name, _} = Id = amqqueue:get_pid(Q),
        case ra_leaderboard:lookup_leader(Name) of
            undefined -> ACTION, N + 1;
            _ -> N
        end
    end,
    0,
    [Q || Q <- rabbit_amqqueue:list(), amqqueue:get_type(Q) =:= rabbit_quorum_queue]).
"""


def rabbitmq_bin() -> Path | None:
    """The directory of the real rabbitmq-server script (not Debian's su-to-rabbitmq wrapper)."""
    found = shutil.which("rabbitmq-server")
    return None if found is None else Path(os.path.realpath(found)).parent


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[RabbitNode]:
    """A started private node, shut down and deleted on exit."""
    with private_rabbitmq_nodes(1) as (node,):
        yield node


@contextlib.contextmanager
def private_rabbitmq_nodes(count: int, cookie: str | None = None) -> Iterator[list[RabbitNode]]:
    """`count` private nodes, not clustered (`cookie`: one Erlang cookie for all, so that
    they may join), booted at once; each shut down and deleted on exit."""
    bin_dir = rabbitmq_bin()
    if bin_dir is None or not (bin_dir / "rabbitmqctl").exists():
        unavailable("rabbitmq-server is not installed: broker outage scenarios need it")
    assert bin_dir is not None
    sweep_stale_rabbitmq()
    members = []
    try:
        for _ in range(count):
            root = Path(tempfile.mkdtemp(prefix=f"{RABBIT_PREFIX}{os.getpid()}-"))
            if cookie is not None:
                (root / ".erlang.cookie").write_text(cookie)
                (root / ".erlang.cookie").chmod(0o400)
            members.append(RabbitNode(root, bin_dir))
        each_at_once(RabbitNode.start, members)
        yield members
    finally:
        each_at_once(RabbitNode.remove, members)


def each_at_once(action: Callable[[RabbitNode], None], members: list[RabbitNode]) -> None:
    """`action` on every node in parallel (a boot or a shutdown is mostly waiting)."""
    with ThreadPoolExecutor(max(len(members), 1)) as pool:
        list(pool.map(action, members))


def sweep_stale_rabbitmq() -> None:
    """Remove what earlier sessions left (once per process: later nodes are this one's)."""
    _sweep_once("rabbitmq", _remove_stale_rabbitmq)


def _remove_stale_rabbitmq() -> None:
    """Kill private beams whose pytest session is gone, and delete their files."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() != "beam.smp":
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            owners = [v.split(b"=", 1)[1] for v in environ if v.startswith(OWNER.encode() + b"=")]
            if owners and _stale(int(owners[0])):
                os.kill(int(proc.name), signal.SIGKILL)
    for path in Path(tempfile.gettempdir()).glob(f"{RABBIT_PREFIX}*-*"):
        owner = path.name.removeprefix(RABBIT_PREFIX).split("-", 1)[0]
        if owner.isdigit() and _stale(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


# --- PostgreSQL ---------------------------------------------------------------------------


class PostgresCluster:
    """A PostgreSQL cluster of its own (Debian's pg_createcluster), trusting local TCP."""

    def __init__(self, version: str, role: str = "") -> None:
        self.version = version
        self.name = f"{PG_PREFIX}{os.getpid()}{f'_{role}' if role else ''}"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args])

    def create(self) -> None:
        _run(
            [
                "pg_createcluster",
                self.version,
                self.name,
                "--port",
                str(self.port),
                "--start-conf",
                "manual",
                "--",
                "--auth-local=trust",
                "--auth-host=trust",
            ]
        )
        self.start()

    def start(self) -> None:
        self._ctl("start")

    @property
    def data_directory(self) -> Path:
        return Path(f"/var/lib/postgresql/{self.version}/{self.name}")

    def create_standby(self, primary: PostgresCluster) -> None:
        """Create this cluster as a streaming standby of `primary` (`pg_basebackup -R`, which
        also writes its primary_conninfo), and start it."""
        _run(
            [
                "pg_createcluster", self.version, self.name, "--port", str(self.port),
                "--", "--auth-local=trust", "--auth-host=trust",
            ]
        )  # fmt: skip  # (its pg_hba.conf, in /etc, is what a promoted standby serves with)
        for path in self.data_directory.iterdir():  # pg_basebackup fills an empty directory
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        _run(
            [
                "runuser", "-u", "postgres", "--",
                f"/usr/lib/postgresql/{self.version}/bin/pg_basebackup",
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-D", str(self.data_directory), "-R", "-X", "stream",
            ]
        )  # fmt: skip
        self.start()

    def restart_fast(self) -> None:
        """`pg_ctlcluster … restart -m fast`: sessions are terminated, then it starts again."""
        self._ctl("restart", "-m", "fast")

    def promote(self) -> None:
        """`pg_ctlcluster … promote`: a standby leaves recovery and takes writes."""
        self._ctl("promote")

    def stop_immediate(self) -> None:
        """`stop -m immediate`: the postmaster quits at once, as if it crashed."""
        self._ctl("stop", "-m", "immediate")

    @property
    def online(self) -> bool:
        return _cluster_status(self.version, self.name) == "online"

    def ensure_running(self) -> None:
        if not self.online:
            self.start()

    def drop(self) -> None:
        _run(["pg_dropcluster", "--stop", self.version, self.name])


def _cluster_status(version: str, name: str) -> str | None:
    for line in _run(["pg_lsclusters", "--no-header"]).splitlines():
        fields = line.split()
        if fields[:2] == [version, name]:
            return fields[3]
    return None


def postgres_version() -> str | None:
    """The newest PostgreSQL server installed for pg_createcluster, if any."""
    if shutil.which("pg_createcluster") is None:
        return None
    versions = [p.parent.parent.name for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    return max(versions, key=float, default=None)


def _postgres_version() -> str:
    """The version for private clusters; skips (fails under CI) when they cannot be had."""
    version = postgres_version()
    if version is None:
        unavailable("pg_createcluster is not installed: database outage scenarios need it")
    if os.geteuid() != 0:
        unavailable("pg_createcluster needs root to create a private PostgreSQL cluster")
    assert version is not None
    _sweep_once("postgres", _remove_stale_postgres)
    return version


@contextlib.contextmanager
def _dropped_on_exit(cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    try:
        yield cluster
    finally:
        if _cluster_status(cluster.version, cluster.name) is not None:
            cluster.drop()


@contextlib.contextmanager
def private_postgres(role: str = "") -> Iterator[PostgresCluster]:
    """A created and started private cluster, dropped on exit; `role` names a second one."""
    with _dropped_on_exit(PostgresCluster(_postgres_version(), role)) as cluster:
        cluster.create()
        yield cluster


@contextlib.contextmanager
def private_standby(primary: PostgresCluster, role: str) -> Iterator[PostgresCluster]:
    """A private streaming standby of `primary` (asynchronous until the primary's
    synchronous_standby_names names it), dropped on exit."""
    with _dropped_on_exit(PostgresCluster(primary.version, role)) as standby:
        standby.create_standby(primary)
        yield standby


def _remove_stale_postgres() -> None:
    """Drop private clusters whose pytest session is gone."""
    for line in _run(["pg_lsclusters", "--no-header"]).splitlines():
        version, name = line.split()[:2]
        owner = name.removeprefix(PG_PREFIX).split("_", 1)[0]  # <pid> or <pid>_<role>
        if name.startswith(PG_PREFIX) and owner.isdigit() and _stale(int(owner)):
            _run(["pg_dropcluster", "--stop", version, name])
