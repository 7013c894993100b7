"""The OpenAPI document and schemathesis against a running gateway: no 5xx, and every
response conforms to the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import System

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 100  # per operation; the run takes well under two minutes


def test_the_openapi_document_is_served_and_lists_every_v1_route(system: System) -> None:
    document = httpx.get(f"{system.base_url}/openapi.json").json()

    assert document["openapi"].startswith("3.1")
    assert {"/v1/events", "/v1/hooks/{client_id}", "/v1/token"} <= set(document["paths"])


@pytest.mark.timeout(660)  # the run's own bound is 600 s; POST /v1/events/batch lengthened it
def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(
    system: System, tmp_path: Path
) -> None:
    token = system.token(system.create_client("schemathesis", admin=True))

    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{system.base_url}/openapi.json",
            "--checks",
            "all",
            # Whether a schema-valid body is accepted depends on state the document cannot
            # express (registered handlers' own rules, a reused Idempotency-Key, a webhook
            # signature): the issue asks for no 5xx and conforming responses, checked here.
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "5",
            "--header",
            f"Authorization: Bearer {token}",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--generation-allow-x00",
            "false",
        ],
        capture_output=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )

    output = (run.stdout + run.stderr).decode(errors="replace")
    assert run.returncode == 0, output[-12000:]
