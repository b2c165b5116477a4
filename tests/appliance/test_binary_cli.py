"""The one-file binary's admin commands, run from a directory with no source tree and no
Python variables in the environment (as on a fresh VM)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from app import __version__
from tests.appliance.helpers import (
    Installed,
    ServerProcess,
    clean_env,
    free_port,
    rewrite_config,
)
from tests.harness import unavailable


def imchat(binary: Path, cwd: Path, *args: str, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(binary), *args], cwd=cwd, env=clean_env(cwd), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version_from_an_empty_directory(binary: Path, tmp_path: Path) -> None:
    result = imchat(binary, tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imchat {__version__}"


def test_built_in_defaults_keep_data_across_restarts(binary: Path, tmp_path: Path) -> None:
    """No --config, no ./config.toml: the built-in defaults put the data in the working folder
    (never in the binary's temporary unpack folder), say so, and it is there after a restart."""
    if Path("/etc/imchat/config.toml").exists():
        pytest.skip("/etc/imchat/config.toml exists here and takes precedence, by design")
    work = tmp_path / "run"
    folder = work / "cwd"
    database = folder / "data" / "imchat.db"
    checked = imchat(binary, folder, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "built-in defaults" in checked.stdout and str(database) in checked.stdout
    assert "_MEI" not in checked.stdout, checked.stdout
    added = imchat(binary, folder, "user", "add", "13900000009", "--password-stdin",
                   stdin="erin-secret-1\n")
    assert added.returncode == 0, added.stderr
    # One line names the config (none: built-in defaults) and the database.
    assert f"database sqlite {database}" in added.stderr and "_MEI" not in added.stderr

    port = free_port()
    environment = {"IMCHAT_SERVER_PORT": str(port), "IMCHAT_SERVER_HOST": "127.0.0.1"}
    for restart in (False, True):
        server = ServerProcess(binary, None, port, work, environment=environment)
        try:
            server.wait_ready()
            with httpx.Client(base_url=server.base_url, timeout=15) as client:
                if not restart:
                    body = client.post("/user/register", data={
                        "mobile": "13900000010", "passwd": "fred-secret-1"}).json()
                    assert body["code"] == 0, body
                for mobile, password in (("13900000009", "erin-secret-1"),
                                         ("13900000010", "fred-secret-1")):
                    if restart or mobile == "13900000009":
                        body = client.post("/user/login", data={
                            "mobile": mobile, "passwd": password}).json()
                        assert body["code"] == 0, (mobile, body, server.log_text())
            assert server.stop() == 0, server.log_text()
        finally:
            server.kill()
        assert f"database sqlite {database}" in server.log_text()
    listed = imchat(binary, folder, "user", "list")
    assert "13900000009" in listed.stdout and "13900000010" in listed.stdout, listed


def test_admin_commands(installed: Installed, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text(rewrite_config(installed.config.read_text(), data, free_port()))
    cwd = tmp_path / "cwd"
    run = lambda *args, stdin=None: imchat(installed.binary, cwd, *args, stdin=stdin)  # noqa: E731

    checked = run("check-config", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "mode production" in checked.stdout and str(data / "imchat.db") in checked.stdout

    assert run("init-db", "--config", str(config)).returncode == 0
    assert (data / "imchat.db").is_file()

    added = run("user", "add", "13900000001", "--nickname", "Carol", "--password-stdin",
                "--config", str(config), stdin="carol-secret-1\n")
    assert added.returncode == 0, added.stderr
    assert "created user" in added.stdout
    again = run("user", "--config", str(config), "add", "13900000001", "--password-stdin",
                stdin="carol-secret-1\n")
    assert again.returncode == 1 and "refused" in again.stderr

    listed = run("user", "list", "--config", str(config))
    assert listed.returncode == 0 and "13900000001\tCarol\tactive" in listed.stdout
    before = run("--config", str(config), "user", "list")  # the option before the command
    assert before.returncode == 0 and before.stdout == listed.stdout, before.stderr
    assert f"config {config}; database sqlite {data / 'imchat.db'}" in before.stderr

    assert run("user", "disable", "13900000001", "--config", str(config)).returncode == 0
    assert "\tdisabled" in run("user", "list", "--config", str(config)).stdout
    assert run("user", "enable", "13900000001", "--config", str(config)).returncode == 0
    reset = run("user", "reset-password", "13900000001", "--password-stdin", "--config",
                str(config), stdin="carol-secret-2\n")
    assert reset.returncode == 0, reset.stderr
    assert run("user", "disable", "13999999999", "--config", str(config)).returncode == 1

    backup = tmp_path / "backup" / "imchat-backup.db"
    saved = run("backup", str(backup), "--config", str(config))
    assert saved.returncode == 0, saved.stderr
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT mobile FROM im_user").fetchall() == [("13900000001",)]
    assert run("backup", str(backup), "--config", str(config)).returncode == 1  # never overwrite

    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("[log]", "[log]\nlevle = \"INFO\""))
    refused = run("check-config", "--config", str(bad))
    assert refused.returncode == 2 and "log.levle" in refused.stderr


def test_admin_command_as_another_user_is_one_line(binary: Path) -> None:
    """`imchat user list` by a user who cannot write the data folder: one line naming the folder
    and the fix, no traceback from the database driver (exit status 2)."""
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None:
        unavailable("needs root and runuser to run the binary as another user")
    # Outside pytest's tmp folder (0700, root's): the other user must reach the files.
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder)
        site.chmod(0o755)
        (site / "data").mkdir(mode=0o755)
        config = site / "config.toml"
        config.write_text('[database]\npath = "data/imchat.db"\n')
        config.chmod(0o644)
        result = subprocess.run([runuser, "-u", "nobody", "--", str(binary), "--config",
                                 str(config), "user", "list"], cwd=site, env=clean_env(site),
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{site / 'data'}" in last and "not writable" in last and "sudo -u" in last, last
