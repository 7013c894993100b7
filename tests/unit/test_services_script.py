"""scripts/services decides what to install and start: Debian's packages when PostgreSQL or
RabbitMQ is missing (through sudo when not root), a start when installed but down, nothing when
up, and a message saying exactly what to install where there is no apt-get.

Nothing is installed or uninstalled here: the script runs with a PATH of stubs that record what
they are asked (apt-get "installs" stubs of the servers, the servers listen on free ports)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services"
TOOLS = ("bash", "env", "seq", "sleep", "ls", "sort", "tail", "grep", "sed", "cat", "cp", "mkdir")

LISTEN = """#!/bin/bash
# listen on port $1 until killed, as a started server would
"$STUB_PYTHON" -c 'import socket, sys, time
s = socket.create_server(("127.0.0.1", int(sys.argv[1]))); time.sleep(600)' "$1" \\
  >/dev/null 2>"$STUB_LOG.listen" &
echo $! >> "$STUB_PIDS"
"""
SERVERS = {
    "pg_ctlcluster": (
        '#!/bin/bash\necho "pg_ctlcluster $*" >> "$STUB_LOG"\n'
        '[ "$4" = start ] && listen "$SERVICES_PG_PORT"\nexit 0\n'
    ),
    "rabbitmq-server": (
        '#!/bin/bash\necho "rabbitmq-server $*" >> "$STUB_LOG"\nlisten "$SERVICES_AMQP_PORT"\n'
    ),
    "rabbitmqctl": '#!/bin/bash\necho "rabbitmqctl $*" >> "$STUB_LOG"\n',
}
APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$STUB_LOG"
[ "$1" = install ] || exit 0
for package in "$@"; do
  case "$package" in
    postgresql)
      cp "$STUB_STORE/pg_ctlcluster" "$STUB_BIN/"
      mkdir -p "$SERVICES_PG_CONF/15/main"
      echo "host all all 127.0.0.1/32 scram-sha-256" > "$SERVICES_PG_CONF/15/main/pg_hba.conf";;
    rabbitmq-server) cp "$STUB_STORE/rabbitmq-server" "$STUB_STORE/rabbitmqctl" "$STUB_BIN/";;
  esac
done
"""
SUDO = '#!/bin/bash\necho "sudo $1" >> "$STUB_LOG"\nexec "$@"\n'
ID = '#!/bin/bash\n[ "$1" = -u ] && echo "$STUB_UID" || exit 1\n'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Machine:
    """A made-up machine: what is installed is what its stub directory holds."""

    tmp: Path
    pg_port: int
    amqp_port: int

    @property
    def bin(self) -> Path:
        return self.tmp / "bin"

    def stub(self, name: str, text: str, where: Path | None = None) -> None:
        path = (where or self.bin) / name
        path.write_text(text)
        path.chmod(0o755)

    def install(self, *names: str) -> None:
        for name in names:
            shutil.copy(self.tmp / "store" / name, self.bin / name)
        if "pg_ctlcluster" in names:
            (self.tmp / "etc-postgresql" / "15" / "main").mkdir(parents=True)
            (self.tmp / "etc-postgresql" / "15" / "main" / "pg_hba.conf").write_text("local all\n")

    def run(self, uid: int = 0) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": str(self.bin),
            "STUB_LOG": str(self.tmp / "calls"),
            "STUB_PIDS": str(self.tmp / "pids"),
            "STUB_BIN": str(self.bin),
            "STUB_STORE": str(self.tmp / "store"),
            "STUB_UID": str(uid),
            "STUB_PYTHON": sys.executable,
            "SERVICES_PG_PORT": str(self.pg_port),
            "SERVICES_AMQP_PORT": str(self.amqp_port),
            "SERVICES_PG_CONF": str(self.tmp / "etc-postgresql"),
            "SERVICES_SBIN": "",
        }
        return subprocess.run(
            [str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def calls(self) -> list[str]:
        log = self.tmp / "calls"
        return log.read_text().splitlines() if log.exists() else []

    def hba(self) -> str:
        return (self.tmp / "etc-postgresql" / "15" / "main" / "pg_hba.conf").read_text()

    def stop(self) -> None:
        pids = self.tmp / "pids"
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    made = Machine(tmp_path, free_port(), free_port())
    made.bin.mkdir()
    (tmp_path / "store").mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (made.bin / tool).symlink_to(found)
    made.stub("listen", LISTEN)
    made.stub("id", ID)
    made.stub("sudo", SUDO)
    for name, text in SERVERS.items():
        made.stub(name, text, tmp_path / "store")
    yield made
    made.stop()


def test_a_machine_without_either_installs_both_with_apt_then_starts_them(
    machine: Machine,
) -> None:
    machine.stub("apt-get", APT_GET)

    ran = machine.run(uid=0)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    calls = machine.calls()
    assert "apt-get install -y -qq --no-install-recommends postgresql" in calls
    assert "apt-get install -y -qq --no-install-recommends rabbitmq-server" in calls
    assert "pg_ctlcluster --skip-systemctl-redirect 15 main start" in calls
    assert "rabbitmq-server -detached" in calls
    assert not [call for call in calls if call.startswith("sudo")]  # root needs no sudo
    # The default URL (postgres, no password, 127.0.0.1) can log in to the fresh cluster
    assert machine.hba().splitlines()[:2] == [
        "host all postgres 127.0.0.1/32 trust",
        "host all postgres ::1/128 trust",
    ]
    assert "services: PostgreSQL and RabbitMQ are up" in ran.stdout


def test_a_user_who_is_not_root_installs_and_starts_through_sudo(machine: Machine) -> None:
    machine.stub("apt-get", APT_GET)

    ran = machine.run(uid=1000)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    sudo = [call.removeprefix("sudo ") for call in machine.calls() if call.startswith("sudo ")]
    assert sudo == [
        "apt-get",
        "env",
        "sed",
        "pg_ctlcluster",
        "apt-get",
        "env",
        "rabbitmq-server",
        "rabbitmqctl",
    ]


def test_without_apt_get_it_says_exactly_what_to_install_and_changes_nothing(
    machine: Machine,
) -> None:
    ran = machine.run()

    assert ran.returncode == 1
    assert "postgresql not installed, and there is no apt-get here" in ran.stderr
    assert "PostgreSQL (13 or later) listening on 127.0.0.1:5432" in ran.stderr
    assert "RabbitMQ (3.10 or later) on 127.0.0.1:5672" in ran.stderr
    assert machine.calls() == []


def test_installed_but_stopped_services_are_started_not_installed(machine: Machine) -> None:
    machine.stub("apt-get", APT_GET)
    machine.install("pg_ctlcluster", "rabbitmq-server", "rabbitmqctl")

    ran = machine.run()

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [call.split()[0] for call in machine.calls()] == [
        "pg_ctlcluster",
        "rabbitmq-server",
        "rabbitmqctl",
    ]
    assert machine.hba() == "local all\n"  # a cluster someone configured is left alone


def test_running_services_are_left_alone(machine: Machine) -> None:
    machine.stub("apt-get", APT_GET)
    with (
        socket.create_server(("127.0.0.1", machine.pg_port)),
        socket.create_server(("127.0.0.1", machine.amqp_port)),
    ):
        ran = machine.run()

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert machine.calls() == []


#: A Debian python3 without python3-venv: `import ensurepip` fails.
PYTHON_WITHOUT_VENV = """#!/bin/bash
case "$2" in
  *ensurepip*) exit 1;;
  *print*) echo 3.11;;
esac
"""


def run_python_venv(machine: Machine) -> subprocess.CompletedProcess[str]:
    machine.stub("python3", PYTHON_WITHOUT_VENV)
    env = {"PATH": str(machine.bin), "STUB_LOG": str(machine.tmp / "calls"), "STUB_UID": "1000"}
    return subprocess.run(
        [str(ROOT / "scripts" / "python-venv"), "python3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_python_without_venv_gets_debians_venv_package_through_sudo(machine: Machine) -> None:
    machine.stub("apt-get", APT_GET)

    ran = run_python_venv(machine)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert machine.calls() == [
        "sudo apt-get",
        "apt-get update -qq",
        "sudo env",
        "apt-get install -y -qq --no-install-recommends python3.11-venv",
    ]


def test_a_python_without_venv_and_no_apt_get_is_told_what_to_install(machine: Machine) -> None:
    ran = run_python_venv(machine)

    assert ran.returncode == 1
    assert "Install your system's venv support for python3 (Debian/Ubuntu: python3.11-venv)" in (
        ran.stderr
    )
    assert machine.calls() == []
