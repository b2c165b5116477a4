"""The one-file binary carries what the administration features load: prometheus-client (the
/metrics page) and ldap3 (directory sign-in, checked against a real slapd), run from a folder
with no source tree and no Python variables."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.appliance.helpers import ServerProcess, free_port
from tests.ldap_server import PASSWORDS, running_slapd


def test_the_binary_signs_in_with_the_directory_and_serves_metrics(binary: Path,
                                                                   tmp_path: Path) -> None:
    with running_slapd(tmp_path / "slapd") as slapd:
        port = free_port()
        environment = {"IMCHAT_SERVER_PORT": str(port), "IMCHAT_SERVER_HOST": "127.0.0.1"}
        environment.update({f"IMCHAT_LDAP_{key.upper()}": str(value)
                            for key, value in slapd.settings().items()})
        server = ServerProcess(binary, None, port, tmp_path / "run", environment=environment)
        try:
            server.wait_ready()
            with httpx.Client(base_url=server.base_url, timeout=15) as client:
                body = client.post("/user/login", data={"mobile": "ann",
                                                        "passwd": PASSWORDS["ann"]}).json()
                assert (body["code"], body["data"]["nickname"]) == (0, "Ann Lee"), body
                metrics = client.get("/metrics")
            assert metrics.status_code == 200
            # The readiness probe's refused logins count too: at least this one.
            series = 'imchat_http_requests_total{method="POST",route="user/login",status="200"} '
            [logins] = [line for line in metrics.text.splitlines() if line.startswith(series)]
            assert float(logins[len(series):]) >= 1
            assert server.stop() == 0, server.log_text()
        finally:
            server.kill()
