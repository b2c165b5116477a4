"""What a newcomer does first, run as written: `make run` (the address it prints, listening on
this machine only unless HOST says otherwise) and the README's curl walkthrough against a real
server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import free_port, unavailable

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, port: int) -> Path:
    """config.toml as shipped (host 0.0.0.0), on `port`, data under `folder`."""
    text = (REPO / "config.toml").read_text()
    text = re.sub(r"^port = 8081$", f"port = {port}", text, count=1, flags=re.M)
    text = text.replace("argon2_memory_kib = 19456", "argon2_memory_kib = 8192")
    config = folder / "config.toml"
    config.write_text(text)
    return config


class Server:
    """A server process whose output is read until its `open ...` line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.lines: list[str] = []

    def wait_for_line(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)}")

    def wait_answering(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"nothing answers on port {port}:\n{''.join(self.lines)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def listening_addresses(port: int) -> set[str]:
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_make_run_prints_the_address_and_listens_where_told(tmp_path, host):
    if shutil.which("make") is None or shutil.which("ss") is None:
        unavailable("needs make and ss")
    port = free_port()
    config = write_config(tmp_path, port)
    env = {"HOST": host} if host else {}
    server = Server(["make", "-s", "--no-print-directory", "run", f"CONFIG={config}"], env)
    try:
        line = server.wait_for_line(r"\bopen http")
        server.wait_answering(port)
        urls = re.findall(r"http://\S+", line)
        assert f"http://127.0.0.1:{port}/" in urls, line
        if host is None:
            # A development server is not reachable from the network by default.
            assert urls == [f"http://127.0.0.1:{port}/"], line
            assert listening_addresses(port) == {"127.0.0.1"}
        else:
            assert listening_addresses(port) == {"0.0.0.0"}
            addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None,
                                                            socket.AF_INET)}
            for address in addresses - {"127.0.0.1", "127.0.1.1"}:
                assert f"http://{address}:{port}/" in urls, (address, line)
    finally:
        server.stop()


def readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_curl_walkthrough_runs_as_written(tmp_path):
    if shutil.which("curl") is None:
        unavailable("needs curl")
    port = free_port()
    config = write_config(tmp_path, port)
    server = Server([sys.executable, "-m", "app.main", "serve", "--config", str(config)],
                    {"IMCHAT_SERVER_HOST": "127.0.0.1"})
    try:
        server.wait_for_line(r"\bopen http")
        server.wait_answering(port)
        script = readme_block("## Try the API with curl").replace("localhost:8081",
                                                                  f"localhost:{port}")
        # Run from a copy of the repository's folder as the README says: docs/ is there.
        work = tmp_path / "checkout"
        work.mkdir()
        (work / "docs").symlink_to(REPO / "docs")
        result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=work,
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    answers, rest, decoder = [], result.stdout.strip(), json.JSONDecoder()
    while rest:  # curl prints the answers back to back
        answer, end = decoder.raw_decode(rest)
        answers.append(answer)
        rest = rest[end:].lstrip()
    assert len(answers) == 7 and all(a["code"] == 0 for a in answers), result.stdout
    # The group line made the group private and set its notice.
    assert (answers[5]["data"]["memo"], answers[5]["data"]["private"]) == ("ship on friday", 1)
    original = Image.open(REPO / "docs" / "picture.png").convert("RGB")
    copy = Image.open(work / "copy.png").convert("RGB")
    assert copy.size == original.size and copy.tobytes() == original.tobytes()
