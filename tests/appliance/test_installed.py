"""The installed layout (scripts/install.sh with DESTDIR), its systemd unit, and the installed
binary serving the smoke flow, reloading on SIGHUP and stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from app import __version__
from tests.appliance.helpers import (
    REPO,
    Installed,
    ServerProcess,
    clean_env,
    run_install,
    smoke_flow,
    start,
)
from tests.harness import unavailable


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def server(installed: Installed, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    # The installed config itself, rewritten in place to a temp data dir and a free port.
    workdir = tmp_path_factory.mktemp("served")
    running = start(installed, workdir, config=installed.config)
    try:
        running.wait_ready()
        yield running
    finally:
        running.kill()


def test_install_layout(installed: Installed) -> None:
    assert os.access(installed.binary, os.X_OK) and _mode(installed.binary) == 0o755
    config = installed.config.read_text()
    assert _mode(installed.config) == 0o640  # may hold the MySQL password
    for line in ('path = "/var/lib/imchat/imchat.db"', 'upload_dir = "/var/lib/imchat/resource"',
                 'mode = "production"'):
        assert line in (installed.root / "etc/imchat/config.toml.default").read_text()
    assert "[server]" in config and "[database]" in config
    assert _mode(installed.data_dir) == 0o750 and (installed.data_dir / "resource").is_dir()
    assert installed.unit.read_text() == (REPO / "systemd/imchat.service").read_text()
    assert installed.sysctl.read_text() == (REPO / "systemd/99-imchat.conf").read_text()
    assert (installed.root / "usr/local/share/doc/imchat/admin.md").is_file()


def _setting(text: str, name: str) -> str:
    """The value of the first active `name = value` line (TOML or sysctl syntax)."""
    match = re.search(rf"^{re.escape(name)} *= *(.+?) *$", text, flags=re.M)
    assert match, f"no active {name} line"
    return match.group(1)


def test_installed_tuning_takes_effect(installed: Installed) -> None:
    # The kernel caps the listen queue at net.core.somaxconn: the config asks for exactly that.
    sysctl = installed.sysctl.read_text()
    assert _setting(installed.config.read_text(), "backlog") == \
        _setting(sysctl, "net.core.somaxconn") == "65535"
    # Nothing machine-wide that a server accepting connections does not need.
    assert not re.search(r"^net\.ipv4\.ip_local_port_range", sysctl, flags=re.M)
    # Listening on every interface stays the installed default.
    assert _setting(installed.config.read_text(), "host") == '"0.0.0.0"'
    assert _setting(installed.unit.read_text(), "TasksMax") == "4096"


def _listen_queue(port: int) -> int:
    """Send-Q of the listening socket on `port` in `ss -ltn`: its accept-queue limit."""
    if shutil.which("ss") is None:
        unavailable("ss (iproute2) is not installed")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    queues = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(queues) == 1, out
    return queues.pop()


def test_release_bundle_installs_and_starts(binary: Path, tmp_path: Path) -> None:
    """make release's archive, unpacked anywhere, installs with its own install.sh (no source
    tree, no IMCHAT_BINARY) into a scratch root, and the installed server starts from it."""
    made = subprocess.run(["bash", str(REPO / "scripts" / "make_release.sh")],
                          env={**os.environ, "IMCHAT_BINARY": str(binary),
                               "IMCHAT_RELEASE_DIR": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    archives = list((tmp_path / "out").glob("imchat-*-linux-*.tar.gz"))
    assert [a.name for a in archives] == [f"imchat-{__version__}-linux-{os.uname().machine}.tar.gz"]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(archives[0]) as archive:
        archive.extractall(unpacked, filter="tar")
    bundle = unpacked / archives[0].name.removesuffix(".tar.gz")
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "config.toml", "docs/admin.md", "docs/nginx-imchat.conf", "docs/protocol.md", "imchat",
        "install.sh", "systemd/99-imchat.conf", "systemd/imchat.service", "uninstall.sh"]

    root = tmp_path / "root"
    result = subprocess.run(["sh", str(bundle / "install.sh")], cwd=unpacked,
                            env=clean_env(tmp_path, DESTDIR=str(root)), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    target = Installed(root)
    assert target.binary.read_bytes() == binary.read_bytes()
    assert target.sysctl.read_text() == (REPO / "systemd/99-imchat.conf").read_text()
    assert (root / "usr/local/share/doc/imchat/admin.md").is_file()
    # Started with a listen queue below the kernel's cap, which `ss` must then show as is.
    running = start(target, tmp_path / "run", backlog="1234")
    try:
        running.wait_ready()
        assert _listen_queue(running.port) == 1234
        body = httpx.post(f"{running.base_url}/user/register", timeout=15, data={
            "mobile": "13500000001", "passwd": "secret-123"}).json()
        assert body["code"] == 0, body
        assert running.stop() == 0, running.log_text()
    finally:
        running.kill()
    removed = subprocess.run(["sh", str(bundle / "uninstall.sh")],
                             env=clean_env(tmp_path, DESTDIR=str(root)), capture_output=True,
                             text=True, timeout=60, check=False)
    assert removed.returncode == 0 and not target.binary.exists(), removed.stderr


def test_install_is_idempotent_and_keeps_the_config(binary: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, binary).returncode == 0
    config = root / "etc/imchat/config.toml"
    config.write_text(config.read_text() + "\n# edited by the admin\n")
    (root / "var/lib/imchat/imchat.db").write_bytes(b"")
    again = run_install(root, binary)
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout
    assert config.read_text().endswith("# edited by the admin\n")
    assert (root / "var/lib/imchat/imchat.db").exists()
    assert (root / "usr/local/bin/imchat").read_bytes() == binary.read_bytes()
    assert not list((root / "usr/local/bin").glob(".imchat*"))  # no temporary left behind


def test_install_refuses_a_config_the_new_binary_rejects(binary: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, binary).returncode == 0
    config = root / "etc/imchat/config.toml"
    config.write_text(config.read_text().replace("[server]", "[server]\nprot = 1"))
    (root / "usr/local/bin/imchat").unlink()
    refused = run_install(root, binary)
    assert refused.returncode != 0 and "server.prot" in refused.stderr
    assert not (root / "usr/local/bin/imchat").exists()  # nothing was changed


def test_uninstall_keeps_data_unless_purged(binary: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run_install(root, binary).returncode == 0
    (root / "var/lib/imchat/imchat.db").write_bytes(b"data")
    removed = run_install(root, binary, script="uninstall.sh")
    assert removed.returncode == 0, removed.stderr
    for gone in ("usr/local/bin/imchat", "etc/systemd/system/imchat.service",
                 "etc/sysctl.d/99-imchat.conf"):
        assert not (root / gone).exists(), gone
    assert (root / "var/lib/imchat/imchat.db").read_bytes() == b"data"
    assert (root / "etc/imchat/config.toml").exists()
    purged = run_install(root, binary, "--purge", script="uninstall.sh")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "var/lib/imchat").exists() and not (root / "etc/imchat").exists()


def test_unit_passes_systemd_analyze_verify(installed: Installed, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # The unit names /usr/local/bin/imchat; verify checks that it is executable, so point it at
    # the binary installed under DESTDIR.
    unit = tmp_path / "imchat.service"
    unit.write_text(installed.unit.read_text().replace(
        "/usr/local/bin/imchat", str(installed.binary)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    text = installed.unit.read_text()
    for directive in ("Type=notify", "NotifyAccess=all", "KillMode=mixed", "User=imchat",
                      "LimitNOFILE=1048576", "ProtectSystem=strict", "NoNewPrivileges=yes",
                      "ReadWritePaths=/var/lib/imchat", "CapabilityBoundingSet=\n",
                      "ExecReload=/bin/kill -HUP $MAINPID"):
        assert directive in text, directive


def test_smoke_flow_through_the_installed_binary(server: ServerProcess) -> None:
    result = smoke_flow(server.base_url, server.ws_url)
    assert result.users["ann"]["id"] != result.users["bob"]["id"]
    assert result.chat_checked, "the WebSocket part of the smoke flow did not run"
    # The search indexer's C part (app/service/search/_spacing.c) is in the binary: the indexer
    # says which imchat_spaced it took when it indexes the flow's messages.
    deadline = time.monotonic() + 10
    while "search: imchat_spaced in" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "search: imchat_spaced in C" in server.log_text(), server.log_text()


def test_bundled_web_client_is_served(server: ServerProcess) -> None:
    # Files of asset/ (including asset/vendor/ from `make assets`) come out of the binary.
    files = [p for p in sorted((REPO / "asset").rglob("*"))
             if p.is_file() and not p.name.startswith(".")]
    assert files, "asset/ is empty: `make assets` has not run"
    vendor = [p for p in files if "vendor" in p.parts]
    # The generated web client: Vue's runtime build and the templates compiled at build time.
    generated = [REPO / "asset" / "vendor" / "vue.runtime.global.prod.js",
                 REPO / "asset" / "build" / "templates.js"]
    for path in [files[0], *vendor[:1], *generated]:
        url = f"{server.base_url}/asset/{path.relative_to(REPO / 'asset').as_posix()}"
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200 and answer.content == path.read_bytes(), url
    if (REPO / "app" / "view" / "index.html").exists():
        page = httpx.get(f"{server.base_url}/", timeout=10)  # from app/view/ in the bundle
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]


def _notify_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def _messages(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return got


def test_ready_notification_and_clean_sigterm(installed: Installed, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = _notify_listener(notify_path)
    running = start(installed, tmp_path / "run", notify_socket=notify_path)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline and running.proc.poll() is None:
            ready = any("READY=1" in message for message in _messages(listener))
        assert ready, ("no READY=1 on $NOTIFY_SOCKET (is app.reload.attach wired into "
                       f"app/runner.py?):\n{running.log_text()}")
        # Type=notify promises: once READY=1 is sent, the site answers.
        answer = httpx.post(f"{running.base_url}/user/login", data={"mobile": "0"}, timeout=5)
        assert answer.status_code < 500

        pids = running.group_pids()
        assert len(pids) >= 2  # bootloader + Sanic's main process (+ workers, helpers)
        # SIGTERM while a client is sending: every acknowledged message must be stored.
        acked, closing = asyncio.run(_send_while_stopping(running))
        waited = time.monotonic()
        code = running.stop(None, timeout=30)  # SIGTERM was sent once, mid-burst
        took = closing + time.monotonic() - waited
        log = running.log_text()
        assert code == 0, f"exit code {code}:\n{log}"
        assert took < 10, f"SIGTERM took {took:.1f} s"
        assert "Traceback" not in log, log
        assert "STOPPING=1" in _messages(listener)
        # multiprocessing's resource tracker ends when its pipe closes, just after the rest.
        deadline = time.monotonic() + 5
        while running.group_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running.group_pids(), "processes left after SIGTERM"
        # The one-file bootloader removed what it unpacked.
        assert not list(running.tmpdir.glob("_MEI*")), list(running.tmpdir.iterdir())
        with sqlite3.connect(running.workdir / "data" / "imchat.db") as db:
            stored = {row[0] for row in db.execute("SELECT cid FROM im_message")}
        assert len(acked) >= 5 and acked <= stored, (sorted(acked - stored), log)
    finally:
        running.kill()
        listener.close()


async def _send_while_stopping(running: ServerProcess) -> tuple[set[str], float]:
    """Two users chatting over v2; SIGTERM right after a burst. Returns the acknowledged cids
    and the seconds from SIGTERM until the server closed the connection."""
    from websockets.asyncio.client import connect

    users = []
    async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as client:
        for mobile in ("13600000001", "13600000002"):
            body = (await client.post("/user/register", data={
                "mobile": mobile, "passwd": "secret-123", "nickname": "s"})).json()
            users.append((body["data"]["id"], body["data"]["token"]))
        await client.post("/contact/addfriend", data={"dstname": "13600000002"},
                          headers={"Authorization": f"Bearer {users[0][1]}"})
    (sender, token), (peer, _) = users
    acked: set[str] = set()
    async with connect(f"{running.ws_url}/chat?id={sender}&token={token}&v=2") as ws:
        async def send(first: int, count: int) -> None:
            for number in range(first, first + count):
                await ws.send(json.dumps({"cmd": 10, "dstid": peer, "media": 1,
                                          "content": f"m{number}", "cid": f"c{number}"}))

        await send(0, 5)
        while len(acked) < 5:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame.get("cmd") == 100:
                acked.add(frame["cid"])
        await send(5, 5)
        running.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if frame.get("cmd") == 100:
                    acked.add(frame["cid"])
        return acked, time.monotonic() - started


def test_sighup_reloads_what_it_can(installed: Installed, tmp_path: Path) -> None:
    running = start(installed, tmp_path / "run")
    config = tmp_path / "run" / "config.toml"
    try:
        running.wait_ready()
        mobiles = iter(range(13700000001, 13700001000))
        with httpx.Client(base_url=running.base_url, timeout=15) as client:
            def open_for_registration() -> bool:
                body = client.post("/user/register", data={
                    "mobile": str(next(mobiles)), "passwd": "secret-123", "nickname": "x"}).json()
                assert body["code"] == 0 or "closed" in body["msg"], body
                return body["code"] == 0

            def wait_for(state: bool) -> None:
                deadline = time.monotonic() + 10
                while open_for_registration() != state:
                    assert time.monotonic() < deadline, running.log_text()
                    time.sleep(0.2)

            assert open_for_registration()
            original = config.read_text()
            config.write_text(original.replace("registration_open = true",
                                               "registration_open = false"))
            running.proc.send_signal(signal.SIGHUP)
            wait_for(False)

            config.write_text(original.replace("[server]", "[server]\nbogus = 1"))
            running.proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert running.proc.poll() is None, running.log_text()
            assert not open_for_registration()  # still the last good config
            assert "server.bogus" in running.log_text()

            config.write_text(original)
            running.proc.send_signal(signal.SIGHUP)
            wait_for(True)
        assert running.stop() == 0
    finally:
        running.kill()


def test_runs_under_the_units_syscall_filter_and_memory_rules(installed: Installed,
                                                              tmp_path: Path) -> None:
    """SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute= and
    NoNewPrivileges= of the installed unit, applied with seccomp and prctl (systemd is not PID 1
    here): the start on every interface (listing their addresses), the whole smoke flow, a
    reload and a clean stop must work inside them."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True,
                           check=False)
    if probe.returncode != 0 or shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but python3-seccomp or systemd-analyze is missing "
                        "(apt-get install python3-seccomp systemd)")
        pytest.skip("needs python3-seccomp and systemd-analyze (apt-get install python3-seccomp "
                    "systemd)")
    sandbox = ["/usr/bin/python3", str(Path(__file__).with_name("syscall_sandbox.py")),
               str(installed.unit)]
    # On every interface, as installed: the start lists each interface's address.
    running = start(installed, tmp_path / "run", prefix=sandbox, host='"0.0.0.0"')
    try:
        running.wait_ready()
        assert f"open http://127.0.0.1:{running.port}/" in running.log_text()
        status = Path(f"/proc/{running.proc.pid}/status").read_text()
        assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status, status
        result = smoke_flow(running.base_url, running.ws_url)
        assert result.users["bob"]["id"]
        running.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        answer = httpx.post(f"{running.base_url}/user/login", data={"mobile": "0"}, timeout=5)
        assert answer.status_code < 500, running.log_text()
        assert running.stop() == 0, running.log_text()
        assert "Operation not permitted" not in running.log_text()
    finally:
        running.kill()
