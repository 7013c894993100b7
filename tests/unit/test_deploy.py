"""compose.yaml and the configs it mounts agree with each other and with the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(load(ROOT / "compose.yaml")["services"])


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    expected = {"rabbitmq", "postgres", "migrate", "gateway", "worker"}
    expected |= {"jaeger", "prometheus", "grafana"}
    assert set(compose) == expected
    assert compose["worker"]["deploy"]["replicas"] == 2


def test_every_service_that_stays_up_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        if name != "migrate":
            assert service["healthcheck"]["test"], name


#: Optional dependencies: started first, but their health gates nothing (traces are optional).
OPTIONAL = {"jaeger"}


def test_every_dependency_waits_for_a_condition(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in compose, (name, needed)
            conditions = {"service_healthy", "service_completed_successfully"}
            if needed in OPTIONAL and name in ("gateway", "worker"):
                conditions = {"service_started"}
            assert how["condition"] in conditions, (name, needed)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in compose[needed], needed


def test_seriatim_processes_export_traces_to_jaeger(compose: dict[str, Any]) -> None:
    for name in ("gateway", "worker"):
        assert compose[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert "jaeger" in compose[name]["depends_on"]


def test_mounted_configs_exist(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)


def test_prometheus_scrapes_every_seriatim_process_and_rabbitmq(compose: dict[str, Any]) -> None:
    jobs = {job["job_name"]: job for job in load(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert set(jobs) == {"seriatim-gateway", "seriatim-worker", "rabbitmq"}
    assert jobs["seriatim-gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    worker = jobs["seriatim-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"]
    port = compose["worker"]["command"][compose["worker"]["command"].index("--metrics-port") + 1]
    assert worker["port"] == int(port)
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins


def test_the_dashboard_uses_the_provisioned_data_sources_and_job_names() -> None:
    sources = load(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    uids = {source["uid"]: source for source in sources["datasources"]}
    assert uids["prometheus"]["url"] == "http://prometheus:9090"
    assert uids["jaeger"]["type"] == "jaeger"
    [destination] = uids["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination == {"name": "trace_id", "datasourceUid": "jaeger"}

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "seriatim.json").read_text())
    jobs = {"seriatim-gateway", "seriatim-worker", "rabbitmq"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids
        for target in panel["targets"]:
            for job in re.findall(r'job="([^"]+)"', target["expr"]):
                assert job in jobs, (panel["title"], job)


def test_deployments_run_without_the_demo_handlers(compose: dict[str, Any]) -> None:
    for name in ("gateway", "worker"):
        assert compose[name]["environment"]["SERIATIM_DEMO_HANDLERS"] == "off", name
    assert "ENV SERIATIM_DEMO_HANDLERS=off" in (DEPLOY / "Dockerfile").read_text()
