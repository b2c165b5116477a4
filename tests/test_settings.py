"""Settings: config.toml, environment overrides, and refusals that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, load_settings, unmatched_environment

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_is_valid_and_embedded_by_default():
    settings = load_settings(REPO / "config.toml", environ={})
    assert settings.database.engine == "sqlite" and settings.server.port == 8081
    assert settings.sqlite_path == REPO / "data" / "imchat.db"
    assert settings.broker.kind == "memory"


def test_environment_overrides_every_kind_of_key(tmp_path):
    settings = load_settings(write(tmp_path, "[server]\nport = 9000\n"), environ={
        "IMCHAT_SERVER_PORT": "9100",
        "IMCHAT_DATABASE_PATH": "/tmp/x.db",
        "IMCHAT_AUTH_REGISTRATION_OPEN": "false",
        "IMCHAT_SERVER_PUBLIC_ORIGINS": "https://a.example, https://b.example",
        "IMCHAT_CHAT_PING_INTERVAL_SECONDS": "5.5",
        "IMCHAT_LOG_LEVEL": "debug",
        "IMCHAT_CONFIG": "ignored: not a setting",
    })
    assert settings.server.port == 9100 and settings.sqlite_path == Path("/tmp/x.db")
    assert settings.auth.registration_open is False
    assert settings.server.public_origins == ["https://a.example", "https://b.example"]
    assert settings.chat.ping_interval_seconds == 5.5 and settings.log.level == "DEBUG"


def test_relative_paths_are_anchored_at_the_config_file(tmp_path):
    settings = load_settings(write(tmp_path, '[storage]\nupload_dir = "up"\n'), environ={})
    assert settings.upload_path == tmp_path / "up"


@pytest.mark.parametrize("text, env, named", [
    ("[server]\nprot = 1\n", {}, "server.prot"),
    ("[srever]\nport = 1\n", {}, "[srever]"),
    ('[server]\nport = "high"\n', {}, "server.port"),
    ("[server]\nport = 70000\n", {}, "server.port"),
    ('[database]\nengine = "oracle"\n', {}, "database.engine"),
    ("[auth]\nregistration_open = 1\n", {}, "auth.registration_open"),
    ("", {"IMCHAT_SERVER_PORT": "eighty"}, "IMCHAT_SERVER_PORT"),
    ("", {"IMCHAT_SERVER_COLOUR": "red"}, "IMCHAT_SERVER_COLOUR: no setting server.colour"),
    ('[server]\ntls_cert = "a.pem"\n', {}, "server.tls_cert"),
    ("not = [valid", {}, "not valid TOML"),
    ('[server]\nmode = "production"\npublic_origins = ["*"]\n', {}, "server.public_origins"),
    ('[server]\nmode = "production"\n[database]\nengine = "mysql"\n', {}, "database.password"),
    ('[server]\nmode = "production"\n[testing]\nwebsocket_echo = true\n', {},
     "testing.websocket_echo"),
])
def test_bad_settings_are_refused_naming_the_key(tmp_path, text, env, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, text), environ=env)
    assert named in str(caught.value)


def test_check_config_command_names_the_bad_key(tmp_path):
    bad = write(tmp_path, "[chat]\nalow_strangers = true\n")
    result = subprocess.run([sys.executable, "-m", "app.main", "check-config", "--config", str(bad)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and "chat.alow_strangers" in result.stderr
    good = subprocess.run([sys.executable, "-m", "app.main", "check-config", "--config",
                           str(REPO / "config.toml")], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert good.returncode == 0 and "config OK" in good.stdout


def test_the_shipped_config_says_what_the_built_in_defaults_are():
    # A binary run with no config file behaves as the documented config.toml describes.
    assert load_settings(REPO / "config.toml", environ={}) == Settings(base_dir=REPO)


@pytest.mark.parametrize("env, message", [
    ({"IMCHAT_SERVER_PORT": "abc"}, "IMCHAT_SERVER_PORT: must be a whole number, got 'abc'"),
    ({"IMCHAT_SERVER_PORT": "70000"}, "IMCHAT_SERVER_PORT: must be between 0 and 65535"),
    ({"IMCHAT_AUTH_REGISTRATION_OPEN": "maybe"}, "IMCHAT_AUTH_REGISTRATION_OPEN: must be true"),
    ({"IMCHAT_DATABASE_ENGINE": "oracle"}, "IMCHAT_DATABASE_ENGINE: must be one of"),
])
def test_a_refused_environment_value_names_the_variable(tmp_path, env, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, ""), environ=env)
    assert str(caught.value).startswith(message), caught.value


def test_environment_names_that_match_no_setting_are_listed():
    assert unmatched_environment({
        "IMCHAT_SERVR_PORT": "1", "IMCHAT_SERVER_PORT": "2", "IMCHAT_CONFIG": "x",
        "IMCHAT_TEST_MYSQL_HOST": "h", "IMCHAT_BINARY": "b", "IMCHAT_LOGLEVEL": "debug",
        "IMCHAT_TESTING_WEBSOCKET_ECHO": "1", "HOME": "/root"}) == ["IMCHAT_LOGLEVEL",
                                                                   "IMCHAT_SERVR_PORT"]


@pytest.mark.parametrize("key, written, stored", [
    ("log.level", "debug", "DEBUG"), ("log.level", "Warning", "WARNING"),
    ("server.mode", "Production", "production"), ("database.engine", "SQLite", "sqlite"),
    ("broker.kind", "MEMORY", "memory"),
])
def test_choices_are_accepted_in_any_case_from_file_and_environment(tmp_path, key, written,
                                                                    stored):
    section, name = key.split(".")
    from_file = load_settings(write(tmp_path, f'[{section}]\n{name} = "{written}"\n'), environ={})
    from_env = load_settings(None, environ={f"IMCHAT_{section}_{name}".upper(): written})
    for settings in (from_file, from_env):
        assert getattr(getattr(settings, section), name) == stored


def test_internal_sections_are_not_offered_to_administrators(tmp_path):
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, "[srever]\nport = 1\n"), environ={})
    assert "server" in str(caught.value) and "testing" not in str(caught.value)
