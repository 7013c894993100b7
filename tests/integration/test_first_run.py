"""The first start of `seriatim up` on an empty database makes an admin client and prints the
console's address with its id and secret, once; those credentials sign in to the console.
On the starting code nothing is printed and no client exists: both tests fail."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from actors.credentials import verify_secret
from actors.settings import Settings
from actors.store import Journal
from seriatim.first_run import announce, first_admin
from tests import harness
from tests.harness import wait_for

pytestmark = pytest.mark.integration


async def test_only_the_first_start_makes_an_admin(database: str) -> None:
    settings = Settings(database_url=database, http_host="0.0.0.0", http_port=8123)
    admin = await first_admin(settings)
    assert admin is not None
    assert await first_admin(settings) is None
    journal = await Journal.connect(database)
    try:
        stored = await journal.credentials(admin.client_id)
    finally:
        await journal.close()
    assert stored is not None
    assert stored.admin
    assert verify_secret(stored.secret_hash, admin.client_secret)
    out = io.StringIO()
    announce(settings, admin, out)
    assert "http://127.0.0.1:8123/console" in out.getvalue()
    assert str(admin.client_id) in out.getvalue()
    assert admin.client_secret in out.getvalue()


def test_seriatim_up_prints_credentials_that_sign_in_to_the_console(
    services: None, tmp_path: Path
) -> None:
    database = harness.create_database()
    namespace = harness.new_namespace()
    port = harness.free_port()
    env = {
        **os.environ,
        "SERIATIM_DATABASE_URL": harness.database_url(database),
        "SERIATIM_AMQP_URL": harness.AMQP_URL,
        "SERIATIM_NAMESPACE": namespace,
        "SERIATIM_HTTP_PORT": str(port),
        "SERIATIM_LOG_FORMAT": "json",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "seriatim", "up", "--workers", "1", "--metrics-port", "0"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        text = wait_for(
            lambda: "client secret" in log.read_text() and log.read_text(), 60, "the first-run note"
        )
        client_id = re.search(r"client id\s+(\S+)", text)
        secret = re.search(r"client secret\s+(\S+)", text)
        assert client_id
        assert secret
        assert f"http://127.0.0.1:{port}/console" in text

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "the gateway to be ready")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            form = http.get("/console/signin").text
            token = re.search(r'name="token" value="([^"]+)"', form)
            assert token
            fields = {"client_id": client_id.group(1), "client_secret": secret.group(1)}
            signed = http.post("/console/signin", data={**fields, "token": token.group(1)})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/console/clients"
        assert text.count(secret.group(1)) == 1  # printed once, never logged
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        harness.delete_namespace(namespace, database)
        harness.drop_database(database)
