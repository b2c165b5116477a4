"""Checks made before the server starts, each failing with one line that names the problem and
its fix (a SettingsError: exit status 2, which the systemd unit does not restart on): data paths
outside the one-file binary's unpack folder, TLS files that exist, load and name their hosts,
and a listen address that is free. `imchat check-config` runs the same checks."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from app.paths import unpack_dir
from app.settings import Settings, SettingsError


def check_data_paths(settings: Settings) -> None:
    """Refuse a database or upload folder inside the one-file binary's temporary unpack folder:
    everything written there is deleted when the process exits."""
    folder = unpack_dir()
    if folder is None:
        return
    places = [("storage.upload_dir", settings.upload_path)]
    if settings.database.engine == "sqlite":
        places.insert(0, ("database.path", settings.sqlite_path))
    for key, path in places:
        if path.resolve().is_relative_to(folder):
            raise SettingsError(f"{key}: {path} is inside the binary's temporary unpack folder, "
                                "deleted when it exits: give an absolute path, or use a config "
                                "file outside that folder")


def check_storage(settings: Settings, uploads: bool = True) -> None:
    """The SQLite file (and its folder, where SQLite adds -wal and -shm files) and, with
    `uploads`, the upload folder are writable by this user, or can be created: else one line
    instead of a traceback from deep inside the database driver."""
    places = []
    if settings.database.engine == "sqlite":
        places += [("database.path", settings.sqlite_path),
                   ("database.path", settings.sqlite_path.parent)]
    if uploads:
        places.append(("storage.upload_dir", settings.upload_path))
    for key, path in places:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK):
            raise SettingsError(f"{key}: {existing} is not writable for this user (uid "
                                f"{os.geteuid()}): run as the user that owns it, e.g. sudo -u "
                                "imchat imchat ..., or give it to that user")


def check_tls(settings: Settings) -> None:
    """The certificate and key files exist, are readable, load as a pair, and the certificate
    names its hosts (Sanic reads the names from subjectAltName, and browsers require it)."""
    if not settings.server.tls_cert:
        return
    cert = settings.resolve_path(settings.server.tls_cert)
    key = settings.resolve_path(settings.server.tls_key)
    for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        try:
            path.open("rb").close()
        except FileNotFoundError:
            raise SettingsError(f"{name}: {path} does not exist (give the PEM file's path, or "
                                "leave tls_cert and tls_key empty for plain http)") from None
        except OSError as error:
            raise SettingsError(f"{name}: cannot read {path}: {error.strerror} (the service "
                                "user must be able to read it: chgrp imchat FILE; chmod 0640 "
                                "FILE)") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # A password callback: an encrypted key fails here instead of prompting (or hanging
        # under systemd) for a passphrase.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise SettingsError(f"server.tls_cert / server.tls_key: {cert} and {key} are not a PEM "
                            f"certificate and its unencrypted private key ({reason})") from None
    names = _certificate_names(cert)
    if not names:
        raise SettingsError(
            f"server.tls_cert: {cert} has no subjectAltName naming the server (browsers refuse "
            "such a certificate): issue one with the names clients use, e.g. openssl req ... "
            "-addext 'subjectAltName=DNS:chat.example.lan,IP:192.0.2.10' (docs/admin.md, TLS)")


def _certificate_names(cert: Path) -> list[str]:
    # The decoder Sanic's CertSimple itself uses on tls_cert (it raises KeyError without a
    # subjectAltName), so this check and the server agree on what the certificate says.
    decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    return [name for kind, name in decoded.get("subjectAltName", ())
            if kind in ("DNS", "IP Address")]


def listen_problem(settings: Settings) -> str | None:
    """Why the server could not listen on server.host:server.port right now, or None. Binds
    the way Sanic does (SO_REUSEADDR, so a previous run's TIME_WAIT sockets do not count)."""
    host, port = settings.server.host, settings.server.port
    if port == 0:
        return None
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1)
    except socket.gaierror:
        return f"server.host: {host!r} is not a name or address of this machine"
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return (f"server.port: {host}:{port} is already in use by another program (stop "
                    "it, or set another server.port)")
        if error.errno == errno.EACCES:
            return (f"server.port: {port} is below 1024, which needs the CAP_NET_BIND_SERVICE "
                    "capability (docs/admin.md, TLS), or use a port above 1023")
        if error.errno == errno.EADDRNOTAVAIL:
            return f"server.host: {host} is not an address of this machine"
        return f"server.host / server.port: cannot listen on {host}:{port}: {error.strerror}"
    return None


def check_serve(settings: Settings) -> None:
    """Everything `imchat serve` needs before it starts: refuse with one line what would fail."""
    check_data_paths(settings)
    check_storage(settings)
    check_tls(settings)
    problem = listen_problem(settings)
    if problem:
        raise SettingsError(problem)
