"""Helpers for the administration tests: an administrator made through the service the
command line uses, and `imchat ...` run as its own process on a test's database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.model.tables import User
from app.service import admin
from tests.factories import TestUser, register

REPO = Path(__file__).resolve().parent.parent


async def make_admin(server, nickname: str = "boss") -> TestUser:
    user = await register(server, nickname)
    assert await admin.grant_admin(admin.COMMAND_LINE, await User.get(id=user.id)) is True
    return user


def run_cli(settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`imchat ...` as a separate process on the test's database."""
    db = settings.database
    environment = {"IMCHAT_DATABASE_ENGINE": db.engine, "IMCHAT_DATABASE_PATH": db.path,
                   "IMCHAT_DATABASE_HOST": db.host, "IMCHAT_DATABASE_PORT": str(db.port),
                   "IMCHAT_DATABASE_USER": db.user, "IMCHAT_DATABASE_PASSWORD": db.password,
                   "IMCHAT_DATABASE_NAME": db.name, "IMCHAT_STORAGE_UPLOAD_DIR":
                   str(settings.upload_path), "IMCHAT_AUTH_ARGON2_MEMORY_KIB": "8192",
                   "IMCHAT_AUTH_ARGON2_TIME_COST": "1"}
    return subprocess.run([sys.executable, "-m", "app.main", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **environment})
