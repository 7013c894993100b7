"""Fixtures of the cluster suite: one three-node cluster and one system for the module.

Booting three nodes and joining them takes most of a minute on two cores, so the scenarios
share them; each scenario leaves every node running and both gateways up for the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.rabbit_cluster import RabbitCluster, private_cluster
from tests.cluster.rig import Rig, running_rig
from tests.fault import nodes


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    with private_cluster() as started:
        yield started
    print(f"\n[cluster] commands run by this session so far: {dict(nodes.commands_run)}")


@pytest.fixture(scope="module")
def rig(
    services: None, cluster: RabbitCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    with running_rig(Path(tmp_path_factory.mktemp("cluster")), cluster) as running:
        yield running


@pytest.fixture
def healthy(rig: Rig) -> Rig:
    """The rig with every node running and both gateways up (whatever the last test did)."""
    rig.cluster.ensure_running()
    rig.ensure_gateways()
    return rig
