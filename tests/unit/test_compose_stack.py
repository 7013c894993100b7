"""The compose stack checked without pulling an image: Grafana's provisioning against the compose
mounts and service names, every data source a dashboard names, and `docker compose config -q`
where a docker CLI with its compose plugin exists."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
#: Where Grafana reads provisioning unless GF_PATHS_PROVISIONING says otherwise.
PROVISIONING = PurePosixPath("/etc/grafana/provisioning")
#: What each image listens on inside the network (the image's documented ports).
LISTENS = {"prometheus": {9090}, "jaeger": {16686, 4317, 4318, 14269}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text())["services"])


def mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """Container path -> host path of a service's bind mounts."""
    bound = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            bound[PurePosixPath(target)] = ROOT / source
    return bound


def host_path(bound: dict[PurePosixPath, Path], inside: PurePosixPath) -> Path | None:
    """Where a path inside the container is on the host, through the mounts; None if unmounted."""
    for target, source in bound.items():
        if inside == target or target in inside.parents:
            return source / inside.relative_to(target)
    return None


def provisioning(compose: dict[str, Any]) -> Path:
    grafana = compose["grafana"]
    inside = PurePosixPath(
        grafana.get("environment", {}).get("GF_PATHS_PROVISIONING", PROVISIONING)
    )
    found = host_path(mounts(grafana), inside)
    assert found is not None, f"{inside} is not mounted into grafana"
    return found


def datasources(compose: dict[str, Any]) -> list[dict[str, Any]]:
    files = sorted((provisioning(compose) / "datasources").glob("*.yaml"))
    assert files, "no datasource provisioning file"
    return [source for path in files for source in yaml.safe_load(path.read_text())["datasources"]]


def test_every_dashboard_provider_path_is_a_mounted_directory_of_dashboards(
    compose: dict[str, Any],
) -> None:
    """A provider path that no mount holds gives an empty Grafana, silently."""
    bound = mounts(compose["grafana"])
    files = sorted((provisioning(compose) / "dashboards").glob("*.yaml"))
    providers = [p for path in files for p in yaml.safe_load(path.read_text())["providers"]]

    assert providers
    for provider in providers:
        folder = host_path(bound, PurePosixPath(provider["options"]["path"]))
        assert folder is not None, f"provider {provider['name']}: its path is not mounted"
        assert folder.is_dir(), folder
        assert list(folder.glob("*.json")), folder
    home = compose["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert (host_path(bound, PurePosixPath(home)) or Path("/nonexistent")).is_file(), home


def test_every_datasource_url_names_a_compose_service_on_a_port_it_listens_on(
    compose: dict[str, Any],
) -> None:
    for source in datasources(compose):
        url = urlsplit(source["url"])
        assert url.hostname in compose, (source["name"], url.hostname)
        assert url.port in LISTENS[url.hostname], (source["name"], url.port)


def dashboards() -> Iterator[tuple[str, Any]]:
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        yield path.name, yaml.safe_load(path.read_text())  # JSON is YAML


def used_uids(node: Any) -> Iterator[str]:
    """Every data source uid a dashboard names: panels, targets, nested rows, variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict) and "uid" in value:
                yield str(value["uid"])
            elif key == "datasource" and isinstance(value, str):
                yield value
            elif key == "datasourceUid":
                yield str(value)
            else:
                yield from used_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from used_uids(item)


def test_every_datasource_uid_a_dashboard_or_datasource_uses_is_provisioned(
    compose: dict[str, Any],
) -> None:
    provisioned = {source["uid"] for source in datasources(compose)}
    for name, dashboard in dashboards():
        used = set(used_uids(dashboard))
        assert used, name
        assert used <= provisioned, (name, used - provisioned)
    assert set(used_uids(datasources(compose))) <= provisioned  # exemplar links to Jaeger


def compose_command() -> list[str]:
    """`docker compose`, or the standalone `docker-compose`; skip, saying what is missing."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    if docker is None:
        pytest.skip("no docker CLI here: `docker compose config -q` not run")
    pytest.skip(
        "the docker CLI here has no compose plugin (`docker compose version` fails) and there "
        "is no docker-compose: `docker compose config -q` not run"
    )


def test_docker_compose_accepts_the_file_offline() -> None:
    """`config` parses, interpolates and validates the file; it pulls and builds nothing."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}  # no daemon is needed
    checked = subprocess.run(
        [*compose_command(), "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert checked.returncode == 0, checked.stderr
