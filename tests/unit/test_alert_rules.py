"""The shipped alert rules: loaded by the compose Prometheus, unit-tested with promtool, and
written only with metric names that seriatim really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from actors import metrics
from tests import harness

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: What each alert of the issue is called in alerts.yml.
REQUIRED = {
    "SeriatimMailboxSuspended",
    "SeriatimOldestEventTooOld",
    "SeriatimRelayLagging",
    "SeriatimNoActiveSupervisor",
    "SeriatimWorkerDown",
    "SeriatimWorkersFewer",
    "SeriatimGateway5xx",
    "SeriatimBrokerUnreachable",
    "SeriatimDatabaseUnreachable",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (scripts/prometheus installs Debian's prometheus)"
        if harness.IN_CI:
            pytest.fail(message + " (CI=true: tests must not skip)")
        pytest.skip(message)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, cwd=RULES.parent
    )


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_every_alert_of_the_issue_is_there_with_a_severity_and_a_summary() -> None:
    alerts = {rule["alert"]: rule for rule in rules()}

    assert set(alerts) == REQUIRED
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"page", "warn"}, name
        assert rule["annotations"]["summary"], name


def test_the_compose_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    [path] = config["rule_files"]
    assert (ROOT / "deploy" / path).resolve() == RULES
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"./deploy/{Path(path).parent}:/etc/prometheus/{Path(path).parent}:ro" in mounts


def test_promtool_checks_the_rules_and_the_config_that_loads_them() -> None:
    checked = run("check", "rules", RULES.name)
    config = run("check", "config", str(ROOT / "deploy" / "prometheus.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "9 rules found" in checked.stdout
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout  # the rule file was found and checked with it


def test_every_rule_passes_its_promtool_unit_test() -> None:
    tested = run("test", "rules", "alerts_test.yml")

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    cases = yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
    covered = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert covered == REQUIRED


def exported_names() -> set[str]:
    """Every sample name seriatim's processes can expose (counters with `_total`, histograms
    with their suffixes), from the metric objects themselves."""
    names = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_the_rules_use_only_metric_names_seriatim_exports() -> None:
    """Planting a misspelt name (`seriatim_relay_lag`) in alerts.yml fails this test; promtool
    alone would not notice, since a missing series is just an empty result."""
    exported = exported_names()
    for rule in rules():
        used = set(re.findall(r"\bseriatim_[a-z_]+", rule["expr"]))
        assert used or 'up{job="seriatim-worker"}' in rule["expr"], rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)
