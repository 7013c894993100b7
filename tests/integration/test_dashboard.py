"""The shipped dashboard against a real Prometheus scraping real processes, and the number of
series after a thousand clients.

A private RabbitMQ node with its Prometheus plugin, a gateway and two workers with metrics
ports, and Prometheus (Debian's package, installed by scripts/prometheus) scraping all four.
After a small load every PromQL expression of deploy/grafana/dashboards/seriatim.json must
return data, so the dashboard cannot silently name a metric nobody exports.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwk

from actors.settings import Settings
from gateway.tokens import TokenService
from tests import harness
from tests.fault import nodes
from tests.harness import System, free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "seriatim.json"
CLIENTS = 1000
FIRST = 10
#: Series all three processes expose together, whatever the number of clients.
SERIES_BOUND = 1500


def dashboard_expressions() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])
    ]


def test_every_panel_has_a_title_a_description_and_a_query() -> None:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["title"], panel
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]


def test_the_compose_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (scripts/prometheus installs it)"
        if harness.IN_CI:
            pytest.fail(message + " (CI=true: integration tests must not skip)")
        pytest.skip(message)
    checked = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- the parts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[tuple[str, int]]:
    """A private RabbitMQ node with rabbitmq_prometheus: (AMQP URL, metrics port)."""
    bin_dir = nodes.rabbitmq_bin()
    if bin_dir is None or not (bin_dir / "rabbitmqctl").exists():
        nodes.unavailable("rabbitmq-server is not installed")
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix=f"{nodes.RABBIT_PREFIX}{os.getpid()}-"))
    node = nodes.RabbitNode(root, bin_dir)
    port = free_port()
    (root / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
    with (root / "rabbitmq.conf").open("a") as conf:
        conf.write(f"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {port}\n")
    try:
        node.start()
        yield node.url, port
    finally:
        node.remove()


@pytest.fixture(scope="module")
def observed(
    services: None, rabbitmq: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[System, list[int]]]:
    """A gateway and two workers serving metrics: (system, worker metrics ports)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    env = {"SERIATIM_METRICS_EXEMPLARS": "on"}  # as compose.yaml runs it
    with harness.running_system(tmp, workers=0, env=env, amqp_url=rabbitmq[0]) as running:
        ports = [free_port(), free_port()]
        for n, port in enumerate(ports, 1):
            running.spawn(f"worker-{n}", "worker", "--metrics-port", str(port))
        wait_for(lambda: running.live_workers() >= 2, 30, "two workers to register")
        yield running, ports


@pytest.fixture(scope="module")
def prometheus(
    observed: tuple[System, list[int]],
    rabbitmq: tuple[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A real Prometheus scraping the gateway, the workers and RabbitMQ every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus is not installed (scripts/prometheus installs it)"
        if harness.IN_CI:
            pytest.fail(message + " (CI=true: integration tests must not skip)")
        pytest.skip(message)
    running, ports = observed
    tmp = tmp_path_factory.mktemp("prometheus")
    jobs = {
        "seriatim-gateway": [f"127.0.0.1:{running.port}"],
        "seriatim-worker": [f"127.0.0.1:{port}" for port in ports],
        "rabbitmq": [f"127.0.0.1:{rabbitmq[1]}"],
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    with (tmp / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, process, tmp), 60, "Prometheus to be ready")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str, process: subprocess.Popen[bytes], tmp: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError("prometheus exited:\n" + (tmp / "prometheus.log").read_text())
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    return False


# --- load ------------------------------------------------------------------------------------


def new_clients(system: System, count: int) -> list[str]:
    """`count` clients written straight into the journal (no secret needed: the test signs
    their tokens with the gateway's own key)."""
    rows = system.sql(
        "INSERT INTO clients (name, secret_hash) "
        "SELECT 'load-' || g, 'unused' FROM generate_series(1, $1) g RETURNING id",
        count,
    )
    return [str(row["id"]) for row in rows]


def tokens_for(system: System, clients: list[str]) -> dict[str, str]:
    [row] = system.sql("SELECT private_jwk FROM signing_keys")
    private = row["private_jwk"]
    key = jwk.import_key(json.loads(private) if isinstance(private, str) else private)
    issuer = TokenService(Settings(), [key])
    scopes = ["events:write", "events:read"]
    return {client: issuer.issue(uuid.UUID(client), scopes)["access_token"] for client in clients}


def post_all(system: System, tokens: dict[str, str], body: dict[str, Any]) -> None:
    with httpx.Client(base_url=system.base_url, timeout=30) as http:

        def post(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return http.post("/v1/events", json=body, headers=headers).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, tokens.values()))
    assert statuses == [202] * len(tokens)


def all_finished(system: System) -> bool:
    [row] = system.sql(
        "SELECT count(*) FILTER (WHERE status NOT IN ('succeeded', 'dead')) AS open, "
        "count(*) AS total FROM events"
    )
    return bool(row["open"] == 0)


def expositions(system: System, ports: list[int]) -> dict[str, str]:
    urls = {"gateway": f"{system.base_url}/metrics"}
    urls |= {f"worker-{n}": f"http://127.0.0.1:{port}/metrics" for n, port in enumerate(ports, 1)}
    return {name: httpx.get(url, timeout=10).text for name, url in urls.items()}


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def loaded(observed: tuple[System, list[int]], prometheus: str) -> dict[str, Any]:
    """Ten clients, then a thousand, each posting an event; one dead event, one suspended
    mailbox, one refused request; Prometheus scrapes all along. Returns the series counts
    and the client ids."""
    running, ports = observed
    # (the load must come after a first scrape of each process: rates need an increase
    # between two samples, and a fast run can otherwise fit before the first one)
    targets = 2 + len(ports)
    wait_for(lambda: len(query(prometheus, "up == 1")) == targets, 60, "a scrape of every target")
    clients = new_clients(running, CLIENTS)
    tokens = tokens_for(running, clients)
    first = dict(list(tokens.items())[:FIRST])
    post_all(running, first, {"type": "demo.echo", "payload": {"n": 1}})
    wait_for(lambda: all_finished(running), 120, "the first events to finish")
    before = {name: series(text) for name, text in expositions(running, ports).items()}

    rest = dict(list(tokens.items())[FIRST:])
    post_all(running, rest, {"type": "demo.echo", "payload": {"n": 1}})
    halting = clients[0]
    running.execute(f"UPDATE clients SET policy = 'halt' WHERE id = '{halting}'")
    post_all(running, {halting: tokens[halting]}, {"type": "demo.fail", "payload": {"times": 9}})
    refused = httpx.post(
        f"{running.base_url}/v1/events",
        content=b"not json",
        headers={"Authorization": f"Bearer {tokens[halting]}", "Content-Type": "text/plain"},
        timeout=10,
    )
    assert refused.status_code == 415
    wait_for(lambda: all_finished(running), 300, "all events to finish")
    texts = expositions(running, ports)
    after = {name: series(text) for name, text in texts.items()}
    return {"before": before, "after": after, "texts": texts, "clients": clients}


# --- the checks ------------------------------------------------------------------------------


def test_series_stay_bounded_after_a_thousand_clients(loaded: dict[str, Any]) -> None:
    before, after = loaded["before"], loaded["after"]
    print(
        f"\nseries exposed after {FIRST} clients: {before} (total {sum(before.values())}); "
        f"after {CLIENTS} clients: {after} (total {sum(after.values())})"
    )
    # Then the number of series hardly moves while the clients grew a hundredfold
    assert sum(after.values()) < SERIES_BOUND
    assert sum(after.values()) - sum(before.values()) < 60
    # And no client id appears in any label
    text = "\n".join(loaded["texts"].values())
    for client in loaded["clients"][:: CLIENTS // 50]:
        assert client not in text


def test_every_dashboard_expression_returns_data(
    prometheus: str, loaded: dict[str, Any], observed: tuple[System, list[int]]
) -> None:
    # Given Prometheus has scraped the processes after the load
    total = CLIENTS + 1

    def scraped() -> bool:
        found = query(prometheus, "sum(seriatim_events_processed_total)")
        return bool(found) and float(found[0]["value"][1]) >= total

    wait_for(scraped, 60, "Prometheus to scrape the processed events")
    rate = "sum(rate(seriatim_events_processed_total[1m]))"
    wait_for(lambda: query(prometheus, rate), 60, "two scrapes after the load")
    wait_for(lambda: query(prometheus, "sum(rabbitmq_queue_messages_ready)"), 60, "RabbitMQ")

    # Then every expression of every panel returns at least one number (once Prometheus has
    # two samples of each process in the window: a fast run can end before the second scrape)
    def empty() -> list[str]:
        missing = []
        for title, expr in dashboard_expressions():
            result = query(prometheus, expr.replace("$__rate_interval", "1m"))
            numbers = [float(item["value"][1]) for item in result]
            if not any(math.isfinite(number) for number in numbers):
                missing.append(f"{title}: {expr} -> {result}")
        return missing

    with contextlib.suppress(AssertionError):
        wait_for(lambda: not empty(), 30, "every dashboard expression to return data", 1.0)
    assert not empty(), "\n".join(empty())


def test_prometheus_stores_exemplars_that_name_a_trace(
    prometheus: str, loaded: dict[str, Any]
) -> None:
    response = httpx.get(
        f"{prometheus}/api/v1/query_exemplars",
        params={"query": "seriatim_http_request_duration_seconds_bucket", "start": "0"},
        timeout=10,
    )
    response.raise_for_status()
    exemplars = [e for group in response.json()["data"] for e in group["exemplars"]]
    assert exemplars
    assert all(len(e["labels"]["trace_id"]) == 32 for e in exemplars)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])
