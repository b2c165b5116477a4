"""What a hostile client can make the real `imchat serve` process write to its log: no
credential from any URL, no error lines or server paths for probes of the static folders."""

from __future__ import annotations

import httpx

from tests.test_process import REPO, free_port, start, wait_ready, write_config


async def test_access_log_hides_every_secret_and_probes_log_no_server_paths(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + "[log]\naccess_log = true\n")
    base = f"http://127.0.0.1:{port}"
    process = start(config)
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            await client.get("/chat?id=1&notatoken=SECRET-ONE&token=SECRET-TWO")
            await client.post("/user/me?to%6Ben=SECRET-THREE")
            await client.post("/user/login?mobile=someone&passwd=SECRET-FOUR",
                              data={"mobile": "someone"})
            await client.post("/user/me", params={"access_token": "SECRET-FIVE"})
            for probe in ("/asset/%2e%2e/%2e%2e/etc/passwd", "/resource/..%2f..%2fetc%2fpasswd",
                          "/resource/missing.png", "/asset/js/missing.js"):
                assert (await client.get(probe)).status_code == 404
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    access_lines = [line for line in output.splitlines() if " access[" in line]
    assert any("token=***" in line for line in access_lines), output
    assert any("passwd=***" in line for line in access_lines), output
    for secret in ("SECRET-ONE", "SECRET-TWO", "SECRET-THREE", "SECRET-FOUR", "SECRET-FIVE"):
        assert secret not in output, (secret, output)
    assert "ERROR" not in output, output
    # The folders the probes aimed at: the uploads (under tmp_path) and the assets.
    assert str(tmp_path / "uploads") not in output and str(REPO / "asset") not in output, output
