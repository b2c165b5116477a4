"""The `imchat` command as an administrator meets it: which config file it picks, where the
built-in defaults keep data (never in the one-file binary's unpack folder), the line saying which
config and database a command uses, and start-up refusals as one line with exit status 2."""

from __future__ import annotations

import io
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app import main as cli
from app.runner import listen_urls
from app.settings import load_settings
from tests.harness import free_port

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, port: int = 0, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n{extra}'
                      "[auth]\nargon2_memory_kib = 8192\nargon2_time_cost = 1\n")
    return config


@pytest.fixture
def no_installed_config(tmp_path, monkeypatch) -> Path:
    """/etc/imchat/config.toml as seen by the command: a path under tmp_path (absent)."""
    installed = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(cli, "INSTALLED_CONFIG", installed)
    monkeypatch.delenv("IMCHAT_CONFIG", raising=False)
    return installed


def frozen(monkeypatch, folder: Path) -> Path:
    """Run as the one-file binary does: sys._MEIPASS is its temporary unpack folder, which
    (like the old binary's) holds a config.toml with relative data paths."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text((REPO / "config.toml").read_text())
    monkeypatch.setattr(sys, "_MEIPASS", str(folder), raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    return folder


def run_main(monkeypatch, capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_builtin_defaults_keep_data_in_the_working_folder_across_runs(
        tmp_path, monkeypatch, capsys, no_installed_config):
    unpack = frozen(monkeypatch, tmp_path / "_MEI12345")
    work = tmp_path / "empty"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_main(monkeypatch, capsys, "user", "add", "13900000001",
                              "--password-stdin", stdin="carol-secret-1\n")
    assert code == 0 and "created user" in out, err
    # One line says which config and which database: here the built-in defaults, in ./data.
    assert f"database sqlite {work / 'data' / 'imchat.db'}" in err
    assert "built-in defaults" in err and str(unpack) not in err
    # A later run (a restart) sees the same account.
    code, out, _ = run_main(monkeypatch, capsys, "user", "list")
    assert code == 0 and "13900000001" in out
    assert (work / "data" / "imchat.db").is_file()
    assert not list(unpack.rglob("*.db")), list(unpack.rglob("*"))


def test_no_resolved_default_path_lies_in_the_unpack_folder(tmp_path, monkeypatch,
                                                             no_installed_config):
    unpack = frozen(monkeypatch, tmp_path / "_MEI99")
    monkeypatch.chdir(unpack)  # even run from inside it, the defaults are refused there
    for argv in (["check-config"], ["--config", str(unpack / "config.toml"), "check-config"]):
        with pytest.raises(cli.SettingsError, match="unpack folder"):
            cli.load_config(cli.build_parser().parse_args(argv))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    settings, path = cli.load_config(cli.build_parser().parse_args(["check-config"]))
    assert path is None
    for place in (settings.sqlite_path, settings.upload_path):
        assert place.is_relative_to(outside) and not place.is_relative_to(unpack), place


def test_config_search_order(tmp_path, monkeypatch, no_installed_config):
    work = tmp_path / "src"
    local = write_config(work)
    no_installed_config.parent.mkdir(parents=True)
    no_installed_config.write_text("")
    monkeypatch.chdir(work)
    parse = cli.build_parser().parse_args
    # From a source checkout: ./config.toml first.
    assert cli.load_config(parse(["user", "list"]))[1] == Path("config.toml")
    # The one-file binary: the installed config first, even from a folder holding one.
    frozen(monkeypatch, tmp_path / "_MEI1")
    assert cli.load_config(parse(["user", "list"]))[1] == no_installed_config
    # --config before or after the command, then $IMCHAT_CONFIG, win over both.
    for argv in (["--config", str(local), "user", "list"], ["user", "list", "--config", str(local)],
                 ["user", "--config", str(local), "list"], ["--config", str(local), "backup", "x"],
                 ["check-config", "--config", str(local)]):
        assert cli.load_config(parse(argv))[1] == local, argv
    monkeypatch.setenv("IMCHAT_CONFIG", str(local))
    assert cli.load_config(parse(["user", "list"]))[1] == local
    assert "/etc/imchat/config.toml, ./config.toml" in cli.build_parser().format_help()


def test_config_option_before_the_command_reaches_the_database(tmp_path, monkeypatch, capsys,
                                                                no_installed_config):
    config = write_config(tmp_path / "site")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "--config", str(config), "user", "add",
                            "13900000002", "--password-stdin", stdin="dave-secret-1\n")
    assert code == 0, err
    assert f"config {config}; database sqlite {tmp_path / 'site' / 'data' / 'imchat.db'}" in err
    code, out, _ = run_main(monkeypatch, capsys, "--config", str(config), "user", "list")
    assert code == 0 and "13900000002" in out


def test_misspelt_environment_variable_is_reported(tmp_path, monkeypatch, capsys,
                                                   no_installed_config):
    config = write_config(tmp_path)
    monkeypatch.setenv("IMCHAT_SERVR_PORT", "9000")
    code, out, _ = run_main(monkeypatch, capsys, "check-config", "--config", str(config))
    assert code == 0 and "IMCHAT_SERVR_PORT matches no setting" in out


def command(*argv: str, stdin: str | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.main", *argv], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env},
                          stdin=subprocess.DEVNULL if stdin is None else None)


def one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last


def test_user_add_without_a_terminal_says_how(tmp_path):
    config = write_config(tmp_path)
    result = command("user", "add", "13900000003", "--config", str(config))
    one_line_refusal(result, "--password-stdin")


def test_serve_on_a_port_in_use_is_one_line_and_status_2(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port)
        result = command("serve", "--config", str(config))
        one_line_refusal(result, f"127.0.0.1:{port}", "already in use", "server.port")
        checked = command("check-config", "--config", str(config))
    # check-config runs beside a running server: it reports the port, and passes.
    assert checked.returncode == 0 and "in use now" in checked.stdout, checked.stderr


def make_certificate(folder: Path, name: str, *extra: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert), *extra],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def tls_config(folder: Path, cert: Path, key: Path, port: int = 0) -> Path:
    return write_config(folder, port, f'tls_cert = "{cert}"\ntls_key = "{key}"\n')


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    return {"bare": make_certificate(folder, "bare"),
            "named": make_certificate(folder, "named", "-addext",
                                      "subjectAltName=DNS:localhost,IP:127.0.0.1")}


@pytest.mark.parametrize("case, words", [
    ("missing", ("server.tls_cert", "does not exist")),
    ("no_san", ("server.tls_cert", "subjectAltName")),
    ("wrong_key", ("server.tls_key", "private key")),
])
def test_tls_problems_are_one_line_in_check_config_and_serve(tmp_path, certificates, case,
                                                             words):
    named_cert, named_key = certificates["named"]
    cert, key = {"missing": (tmp_path / "nothing.pem", named_key),
                 "no_san": certificates["bare"],
                 "wrong_key": (named_cert, certificates["bare"][1])}[case]
    config = tls_config(tmp_path, cert, key, free_port())
    one_line_refusal(command("check-config", "--config", str(config)), *words)
    one_line_refusal(command("serve", "--config", str(config)), *words)


def test_a_certificate_with_names_serves_https(tmp_path, certificates):
    port = free_port()
    config = tls_config(tmp_path, *certificates["named"], port)
    status, output = serve_until_answering(
        config, f"https://127.0.0.1:{port}/docs/openapi.json", verify=False)
    assert status == 200
    # The start-up lines: which config and database, and the address to open.
    assert f"config {config}; database sqlite" in output, output
    assert f"open https://127.0.0.1:{port}/" in output, output


def serve_until_answering(config: Path, url: str, verify: bool | ssl.SSLContext
                          ) -> tuple[int, str]:
    """Start `imchat serve`, GET `url` once it answers; the status and the server's output."""
    process = subprocess.Popen([sys.executable, "-m", "app.main", "serve", "--config",
                                str(config)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                status = httpx.get(url, verify=verify, timeout=2).status_code
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, f"no answer from {url}"
                time.sleep(0.1)
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    return status, output


def test_admin_guide_lan_certificate_recipe_is_trusted(tmp_path):
    """docs/admin.md's internal-CA commands, run as written (with this machine's names): imchat
    accepts the certificate and a client trusting only the CA connects without a warning."""
    guide = (REPO / "docs" / "admin.md").read_text()
    recipe = guide.split("### A certificate trusted on a LAN", 1)[1]
    script = recipe.split("```sh\n", 1)[1].split("```", 1)[0]
    script = script.replace("chat.office.lan", "localhost").replace("192.168.1.10", "127.0.0.1")
    made = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    port = free_port()
    config = tls_config(tmp_path, tmp_path / "fullchain.pem", tmp_path / "privkey.pem", port)
    assert command("check-config", "--config", str(config)).returncode == 0
    status, _ = serve_until_answering(config, f"https://localhost:{port}/docs/openapi.json",
                                      verify=ssl.create_default_context(
                                          cafile=tmp_path / "ca.pem"))
    assert status == 200


def test_listen_urls_name_every_interface_when_bound_to_all(tmp_path):
    settings = load_settings(write_config(tmp_path, 8081), environ={})
    assert listen_urls(settings) == ["http://127.0.0.1:8081/"]
    settings.server.host = "0.0.0.0"
    everywhere = listen_urls(settings)
    assert "http://127.0.0.1:8081/" in everywhere
    # Every IPv4 address the machine has (as `hostname -I`-like tools see them) is offered.
    for address in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        host = address[4][0]
        if not host.startswith("127."):
            assert f"http://{host}:8081/" in everywhere, (host, everywhere)
