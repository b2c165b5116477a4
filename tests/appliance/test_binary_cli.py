"""The one-file binary's admin commands, run from a directory with no source tree and no
Python variables in the environment (as on a fresh VM)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from app import __version__
from tests.appliance.helpers import Installed, clean_env, free_port, rewrite_config


def imchat(binary: Path, cwd: Path, *args: str, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(binary), *args], cwd=cwd, env=clean_env(cwd), input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version_from_an_empty_directory(binary: Path, tmp_path: Path) -> None:
    result = imchat(binary, tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imchat {__version__}"


def test_bundled_default_config(binary: Path, tmp_path: Path) -> None:
    # No --config, no ./config.toml: the config.toml inside the bundle is used.
    if Path("/etc/imchat/config.toml").exists():
        pytest.skip("/etc/imchat/config.toml exists here and takes precedence, by design")
    result = imchat(binary, tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert "/_MEI" in result.stdout and "config.toml" in result.stdout, result.stdout


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
