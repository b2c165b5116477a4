"""Typed settings: the one object read from `config.toml`, with `IMCHAT_<SECTION>_<KEY>` overrides.

Every key an admin may set is a field below. Loading refuses unknown keys, wrong types and unsafe
values in production mode, naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "IMCHAT_"
# IMCHAT_* variables that are not settings: the config file's path, the build and install
# scripts' options and the test suite's. Any other IMCHAT_* name that matches no setting is a typo.
ENV_NOT_SETTINGS = ("IMCHAT_CONFIG", "IMCHAT_BINARY", "IMCHAT_NO_START", "IMCHAT_STRIP",
                    "IMCHAT_SCREENSHOTS", "IMCHAT_TEST_")
# Sections that exist for the test suite only: not offered to administrators in messages.
INTERNAL_SECTIONS = ("testing",)


class SettingsError(ValueError):
    """A config file or environment variable that cannot be used; the message names the key."""


@dataclasses.dataclass
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8081
    workers: int = 1
    # Origins (scheme://host[:port]) whose pages may open the chat WebSocket besides the
    # site's own; "*" is refused in production.
    public_origins: list[str] = dataclasses.field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    backlog: int = 4096
    mode: Literal["development", "production"] = "development"
    # Trust X-Forwarded-For / X-Forwarded-Proto from this many proxies (0 = none).
    proxies_count: int = 0
    # A request's head (request line and headers) must arrive whole within this many seconds
    # of the connection (or of its first byte, for a later request on a kept-alive one).
    header_timeout_seconds: float = 10.0
    # Connections from one address whose request head is still incomplete a quarter second
    # in; further slow ones are closed (a slowloris holds many such connections open).
    max_unfinished_requests_per_address: int = 50
    # Addresses (or networks, "10.0.0.0/8") allowed to read /metrics; everyone else gets 403.
    metrics_allow: list[str] = dataclasses.field(default_factory=lambda: ["127.0.0.1"])


@dataclasses.dataclass
class DatabaseSettings:
    engine: Literal["sqlite", "mysql"] = "sqlite"
    path: str = "data/imchat.db"
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "imchat"
    password: str = ""
    name: str = "imchat"
    pool_size: int = 10
    # A query or a batch of messages that takes longer fails (the client is told to resend).
    query_timeout_seconds: float = 10.0


@dataclasses.dataclass
class StorageSettings:
    upload_dir: str = "resource"
    max_upload_mb: int = 10
    max_image_pixels: int = 40_000_000
    # Pictures decoded at once, counted in pixels (each costs about 4-5 bytes a pixel while
    # decoded); an upload waits for room, and is refused with 429 if none comes soon.
    max_decode_pixels_in_flight: int = 40_000_000
    uploads_per_minute: int = 20
    # New bytes one user may store per day (files already stored by anyone cost nothing).
    upload_mb_per_day: int = 200


@dataclasses.dataclass
class BrokerSettings:
    kind: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    # The Redis stream that carries envelopes between nodes, and the entries it keeps.
    stream_key: str = "imchat:stream"
    stream_length: int = 10_000


@dataclasses.dataclass
class AuthSettings:
    registration_open: bool = True
    token_ttl_hours: int = 24 * 14
    login_attempts_per_minute: int = 10
    # Attempts on one account from all addresses together, except addresses it signed in from.
    account_login_attempts_per_hour: int = 60
    # Each new account costs an argon2 hash: a flood of sign-ups from one address is refused.
    registrations_per_hour: int = 60
    cookie_name: str = "imchat_token"
    # argon2id cost; OWASP's minimum is m=19 MiB, t=2, p=1 (about 50 ms a hash here).
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1


@dataclasses.dataclass
class ChatSettings:
    allow_strangers: bool = False
    max_message_bytes: int = 16 * 1024
    messages_per_second: int = 20
    max_buffered_kb: int = 256
    ping_interval_seconds: float = 20.0
    ping_timeout_seconds: float = 20.0
    # How often open chat connections are checked against the database's sign-ins.
    session_check_seconds: float = 30.0
    history_page_size: int = 50
    offline_push_limit: int = 1000
    # Chat sockets one user may hold open in this worker; one more is refused with 429.
    max_connections_per_user: int = 20
    history_pages_per_minute: int = 120
    # Members one group may have (joining or inviting beyond it is refused).
    max_group_members: int = 500
    # Minutes after sending during which the sender may recall (0: nobody may) or edit (0: off)
    # a message; a group's owner may recall any message of the group while recalling is on.
    recall_minutes: int = 2
    edit_minutes: int = 15


@dataclasses.dataclass
class ContactsSettings:
    # The people directory (/contact/directory): every active user, searchable by nickname.
    directory: bool = True
    # Friends by request and acceptance; false keeps the article's immediate mutual add.
    require_approval: bool = False


@dataclasses.dataclass
class SearchSettings:
    # Off: this process does not index new messages (searching still answers from the index).
    enabled: bool = True
    index_interval_seconds: float = 0.5
    max_query_length: int = 64
    queries_per_minute: int = 30
    page_size: int = 20
    # Per query: candidate messages checked, and time spent, before answering `more`.
    max_candidates: int = 2000
    max_query_ms: int = 300


@dataclasses.dataclass
class RetentionSettings:
    # Messages older than this many days are deleted (0: kept forever, the default).
    message_days: int = 0
    # Uploaded files no message, avatar or group icon refers to any more are deleted.
    delete_unreferenced_uploads: bool = False
    # Uploads younger than this are kept even if unreferenced (a picture being sent).
    upload_grace_hours: int = 24
    # How often the background job runs (when either of the above is on).
    interval_hours: float = 24.0


@dataclasses.dataclass
class LdapSettings:
    # On: the login form checks the password against the directory (LDAP / Active Directory).
    enabled: bool = False
    # ldap://host[:port] (then StartTLS, unless start_tls = false) or ldaps://host[:port].
    url: str = ""
    start_tls: bool = True
    # A PEM file of the CA that signed the directory's certificate ("": the system's CAs).
    ca_file: str = ""
    # The account imchat searches with ("": anonymous search).
    bind_dn: str = ""
    bind_password: str = ""
    user_base: str = ""
    # {login} is replaced by what the user typed, escaped.
    user_filter: str = "(uid={login})"
    # The attribute whose value is the imchat account name (what people type to sign in).
    login_attribute: str = "uid"
    nickname_attribute: str = "cn"
    # Users matching this (within user_filter) are disabled in imchat, e.g. Active Directory's
    # "(userAccountControl:1.2.840.113556.1.4.803:=2)"; "" for none.
    disabled_filter: str = ""
    # Only members of this group may sign in ("": everyone user_filter finds); its attribute
    # member_attribute lists the members' DNs ("member", or "uniqueMember").
    required_group: str = ""
    member_attribute: str = "member"
    # Accounts without a directory entry (made with `imchat user add`) keep their local password.
    allow_local_accounts: bool = True
    # How often directory accounts are checked (gone or disabled ones are disabled here); 0: never.
    sync_interval_minutes: float = 60.0
    timeout_seconds: float = 5.0


@dataclasses.dataclass
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = False


@dataclasses.dataclass
class TestingSettings:
    # Serves /_test/echo for the WebSocket conformance suite; refused in production.
    websocket_echo: bool = False


@dataclasses.dataclass
class Settings:
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    database: DatabaseSettings = dataclasses.field(default_factory=DatabaseSettings)
    storage: StorageSettings = dataclasses.field(default_factory=StorageSettings)
    broker: BrokerSettings = dataclasses.field(default_factory=BrokerSettings)
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    chat: ChatSettings = dataclasses.field(default_factory=ChatSettings)
    contacts: ContactsSettings = dataclasses.field(default_factory=ContactsSettings)
    search: SearchSettings = dataclasses.field(default_factory=SearchSettings)
    retention: RetentionSettings = dataclasses.field(default_factory=RetentionSettings)
    ldap: LdapSettings = dataclasses.field(default_factory=LdapSettings)
    log: LogSettings = dataclasses.field(default_factory=LogSettings)
    testing: TestingSettings = dataclasses.field(default_factory=TestingSettings)
    # Where relative paths in the file are anchored: the config file's own directory.
    base_dir: Path = dataclasses.field(default_factory=Path.cwd)

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def upload_path(self) -> Path:
        return self.resolve_path(self.storage.upload_dir)

    @property
    def sqlite_path(self) -> Path:
        return self.resolve_path(self.database.path)


def _sections() -> dict[str, type]:
    return {
        f.name: typing.get_type_hints(Settings)[f.name]
        for f in dataclasses.fields(Settings)
        if f.name != "base_dir"
    }


def _coerce(key: str, hint: Any, value: Any, from_env: bool) -> Any:
    """Check `value` against the field's type; environment strings are parsed first."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        # Every choice in any case ("debug", "Production"): stored in the spelling listed.
        spelled = {choice.lower(): choice for choice in allowed}
        if not isinstance(value, str) or value.lower() not in spelled:
            raise SettingsError(f"{key}: must be one of {', '.join(map(repr, allowed))} "
                                f"(in any case), got {value!r}")
        return spelled[value.lower()]
    if origin in (list, types.GenericAlias) or hint == list[str]:
        if from_env and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SettingsError(f"{key}: must be a list of strings, got {value!r}")
        return value
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise SettingsError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if from_env and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise SettingsError(f"{key}: must be a whole number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{key}: must be a whole number, got {value!r}")
        return value
    if hint is float:
        if from_env and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise SettingsError(f"{key}: must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"{key}: must be a string, got {value!r}")
        return value
    raise SettingsError(f"{key}: unsupported setting type {hint!r}")  # pragma: no cover


def _apply(section_obj: Any, section: str, values: Mapping[str, Any], from_env: bool,
           variable: str = "") -> None:
    """Set each key of `values`; messages name `variable` (the environment variable the value
    came from) when given, else the key as written in the file."""
    hints = typing.get_type_hints(type(section_obj))
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in hints:
            known = ", ".join(hints)
            what = f"{variable}: no setting {name}" if variable else f"{name}: unknown key"
            raise SettingsError(f"{what} (known keys in [{section}]: {known})")
        setattr(section_obj, key, _coerce(variable or name, hints[key], value, from_env))


def _server_checks(s: Settings) -> list[tuple[bool, str]]:
    return [
        (0 <= s.server.port <= 65535, "server.port: must be between 0 and 65535"),
        (s.server.workers >= 1, "server.workers: must be at least 1"),
        (s.server.backlog >= 1, "server.backlog: must be at least 1"),
        (bool(s.server.tls_cert) == bool(s.server.tls_key),
         "server.tls_cert / server.tls_key: set both or neither"),
        (s.database.pool_size >= 1, "database.pool_size: must be at least 1"),
        (0 < s.database.query_timeout_seconds <= 600,
         "database.query_timeout_seconds: must be between 0 and 600"),
        (s.broker.stream_length >= 100, "broker.stream_length: must be at least 100"),
        (bool(s.broker.stream_key), "broker.stream_key: must not be empty"),
        (s.server.header_timeout_seconds > 0, "server.header_timeout_seconds: must be positive"),
        (s.server.max_unfinished_requests_per_address >= 1,
         "server.max_unfinished_requests_per_address: must be at least 1"),
        (s.broker.kind != "redis" or s.broker.url.startswith(("redis://", "rediss://", "unix://")),
         "broker.url: must be a redis:// URL when broker.kind is redis"),
        (s.server.workers == 1 or s.broker.kind == "redis",
         "broker.kind: several workers must share messages through redis (set kind = \"redis\")"),
    ]


def _storage_checks(s: Settings) -> list[tuple[bool, str]]:
    return [
        (1 <= s.storage.max_upload_mb <= 1024, "storage.max_upload_mb: must be 1..1024"),
        (s.storage.max_image_pixels >= 1, "storage.max_image_pixels: must be positive"),
        (s.storage.max_decode_pixels_in_flight >= s.storage.max_image_pixels,
         "storage.max_decode_pixels_in_flight: must be at least storage.max_image_pixels"),
        (s.storage.uploads_per_minute >= 1, "storage.uploads_per_minute: must be at least 1"),
        (s.storage.upload_mb_per_day >= s.storage.max_upload_mb,
         "storage.upload_mb_per_day: must be at least storage.max_upload_mb"),
    ]


def _auth_checks(s: Settings) -> list[tuple[bool, str]]:
    return [
        (s.auth.token_ttl_hours >= 1, "auth.token_ttl_hours: must be at least 1"),
        (s.auth.login_attempts_per_minute >= 1, "auth.login_attempts_per_minute: must be >= 1"),
        (s.auth.account_login_attempts_per_hour >= 1,
         "auth.account_login_attempts_per_hour: must be >= 1"),
        (s.auth.registrations_per_hour >= 1, "auth.registrations_per_hour: must be >= 1"),
        (s.auth.argon2_memory_kib >= 8 * 1024, "auth.argon2_memory_kib: must be at least 8192"),
        (s.auth.argon2_time_cost >= 1, "auth.argon2_time_cost: must be at least 1"),
        (s.auth.argon2_parallelism >= 1, "auth.argon2_parallelism: must be at least 1"),
    ]


def _chat_checks(s: Settings) -> list[tuple[bool, str]]:
    return [
        (1024 <= s.chat.max_message_bytes <= 1024 * 1024,
         "chat.max_message_bytes: must be between 1024 and 1048576"),
        (s.chat.messages_per_second >= 1, "chat.messages_per_second: must be at least 1"),
        (s.chat.max_buffered_kb >= 16, "chat.max_buffered_kb: must be at least 16"),
        (s.chat.ping_interval_seconds > 0, "chat.ping_interval_seconds: must be positive"),
        (s.chat.ping_timeout_seconds > 0, "chat.ping_timeout_seconds: must be positive"),
        (0 < s.chat.session_check_seconds <= 3600,
         "chat.session_check_seconds: must be between 0 and 3600"),
        (1 <= s.chat.history_page_size <= 500, "chat.history_page_size: must be 1..500"),
        (s.chat.offline_push_limit >= 0, "chat.offline_push_limit: must be >= 0"),
        (s.chat.max_connections_per_user >= 1, "chat.max_connections_per_user: must be >= 1"),
        (s.chat.history_pages_per_minute >= 1, "chat.history_pages_per_minute: must be >= 1"),
        (s.chat.max_group_members >= 2, "chat.max_group_members: must be >= 2"),
        (0 <= s.chat.recall_minutes <= 525_600, "chat.recall_minutes: must be 0..525600"),
        (0 <= s.chat.edit_minutes <= 525_600, "chat.edit_minutes: must be 0..525600"),
    ]


def _search_checks(s: Settings) -> list[tuple[bool, str]]:
    return [
        (0.05 <= s.search.index_interval_seconds <= 1.5,
         "search.index_interval_seconds: must be 0.05..1.5 (a message is searchable in 2 s)"),
        (1 <= s.search.max_query_length <= 256, "search.max_query_length: must be 1..256"),
        (s.search.queries_per_minute >= 1, "search.queries_per_minute: must be at least 1"),
        (1 <= s.search.page_size <= 100, "search.page_size: must be 1..100"),
        (100 <= s.search.max_candidates <= 100_000, "search.max_candidates: must be 100..100000"),
        (10 <= s.search.max_query_ms <= 10_000, "search.max_query_ms: must be 10..10000"),
    ]


def _admin_checks(s: Settings) -> list[tuple[bool, str]]:
    """Retention, directory sign-in and who may read /metrics."""
    checks = [
        (s.retention.message_days >= 0, "retention.message_days: must be 0 (keep) or more"),
        (s.retention.upload_grace_hours >= 1, "retention.upload_grace_hours: must be at least 1"),
        (s.retention.interval_hours >= 0.01, "retention.interval_hours: must be positive"),
        (not s.ldap.enabled or s.ldap.url.startswith(("ldap://", "ldaps://")),
         "ldap.url: must be an ldap:// or ldaps:// URL when ldap.enabled is true"),
        (not s.ldap.enabled or bool(s.ldap.user_base),
         "ldap.user_base: must name where the users are when ldap.enabled is true"),
        ("{login}" in s.ldap.user_filter, "ldap.user_filter: must contain {login}"),
        (s.ldap.sync_interval_minutes >= 0, "ldap.sync_interval_minutes: must be 0 or more"),
        (0 < s.ldap.timeout_seconds <= 60, "ldap.timeout_seconds: must be between 0 and 60"),
    ]
    for allowed in s.server.metrics_allow:
        checks.append((_is_network(allowed), f"server.metrics_allow: {allowed!r} is not an "
                       "address or a network such as 10.0.0.0/8"))
    return checks


def _validate(settings: Settings) -> None:
    s = settings
    checks = [*_server_checks(s), *_storage_checks(s), *_auth_checks(s), *_chat_checks(s),
              *_search_checks(s), *_admin_checks(s)]
    for origin in s.server.public_origins:
        checks.append((origin == "*" or origin.startswith(("http://", "https://")),
                       f"server.public_origins: {origin!r} must start with http:// or https://"))
    if s.server.mode == "production":
        checks += [
            ("*" not in s.server.public_origins,
             "server.public_origins: '*' is refused in production (it allows cross-site hijacking)"),
            (not s.testing.websocket_echo, "testing.websocket_echo: must be off in production"),
            (s.database.engine != "mysql" or bool(s.database.password),
             "database.password: an empty MySQL password is refused in production"),
            (s.auth.argon2_memory_kib >= 19 * 1024,
             "auth.argon2_memory_kib: below OWASP's 19 MiB minimum is refused in production"),
            (s.log.level != "DEBUG", "log.level: DEBUG is refused in production (it logs request data)"),
            (not s.ldap.enabled or not s.ldap.url.startswith("ldap://") or s.ldap.start_tls,
             "ldap.start_tls: an ldap:// URL without StartTLS sends passwords in clear; refused "
             "in production (use start_tls = true or an ldaps:// URL)"),
        ]
    for ok, message in checks:
        if not ok:
            raise SettingsError(message)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read `path` (if given), then environment overrides; raise SettingsError on any bad key."""
    settings = Settings()
    sections = _sections()
    if path is not None:
        config_path = Path(path)
        try:
            with config_path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {config_path}") from None
        except OSError as exc:  # e.g. /etc/imchat/config.toml (0640) read by another user
            raise SettingsError(f"cannot read config file {config_path}: {exc.strerror} (run "
                                "as the service user, e.g. sudo -u imchat imchat ...)") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_path}: not valid TOML: {exc}") from None
        settings.base_dir = config_path.resolve().parent
        for section, values in data.items():
            if section not in sections:
                offered = ", ".join(s for s in sections if s not in INTERNAL_SECTIONS)
                raise SettingsError(f"[{section}]: unknown section (known: {offered})")
            if not isinstance(values, dict):
                raise SettingsError(f"{section}: must be a [section] table")
            _apply(getattr(settings, section), section, values, from_env=False)
    env = os.environ if environ is None else environ
    # "server.port" -> "IMCHAT_SERVER_PORT": a refused value is reported by the variable's name.
    variables: dict[str, str] = {}
    for name, raw in env.items():
        section = _env_section(name, sections)
        if section is None:
            continue  # IMCHAT_CONFIG and other non-setting variables (see unmatched_environment)
        key = name[len(ENV_PREFIX) + len(section) + 1:].lower()
        _apply(getattr(settings, section), section, {key: raw}, from_env=True, variable=name)
        variables[f"{section}.{key}"] = name
    try:
        _validate(settings)
    except SettingsError as error:
        key, _, problem = str(error).partition(": ")
        if key in variables:
            raise SettingsError(f"{variables[key]}: {problem}") from None
        raise
    return settings


def _env_section(name: str, sections: Mapping[str, type]) -> str | None:
    if not name.startswith(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX):].lower()
    return next((s for s in sections if rest.startswith(s + "_")), None)


def unmatched_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """IMCHAT_* variables that name no setting and no known non-setting variable: most likely a
    misspelt override (IMCHAT_SERVR_PORT), which would otherwise be ignored without a word."""
    env = os.environ if environ is None else environ
    sections = _sections()
    return sorted(name for name in env
                  if name.startswith(ENV_PREFIX) and _env_section(name, sections) is None
                  and not name.startswith(ENV_NOT_SETTINGS))
