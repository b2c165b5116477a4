"""Password hashing (argon2id) and bearer tokens (128+ random bits, stored as sha256)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from app.settings import AuthSettings
from app.util.errors import BadRequest

TOKEN_BYTES = 24  # 192 bits; url-safe text of 32 characters


class PasswordHashing:
    """argon2id with the configured cost; hashing runs in a thread so the loop keeps serving."""

    def __init__(self, auth: AuthSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the account does not exist, so a login for an unknown mobile
        # costs the same time as a wrong password (no account enumeration by timing).
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored_hash or self._dummy_hash, password) and bool(
                    stored_hash
                )
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


_LOCAL_LINK = re.compile(r"^/(resource|asset)/[A-Za-z0-9_.\-/]{1,240}$")


def check_local_link(value: str, label: str) -> str:
    """A picture/voice link must name a file this server serves: /resource/ or /asset/, plain
    characters only (no %-escapes, no '..', no '//'), so every viewer's browser fetches a
    file of ours and nothing else."""
    if value and (not _LOCAL_LINK.match(value) or ".." in value or "//" in value):
        raise BadRequest(f"{label} must be a /resource/ or /asset/ file of this server")
    return value
