"""Sign-ins (im_token rows) as requests and the hub look them up: the session a token digest
names, with its user, one at a time or many at once; and which of a set are still valid."""

from __future__ import annotations

from typing import Any

from app.model.database import fetch_all
from app.util.batching import BatchedLoader

# One indexed lookup per request and per chat handshake: written out rather than built by the
# ORM, whose query construction cost more than the query itself (profiled).
_SESSION_SQL = ("SELECT t.token_hash, t.id AS token_id, t.expires_ms, u.* FROM im_token t "
                "JOIN im_user u ON u.id = t.user_id WHERE t.token_hash {match}")

# Sign-ins looked up by token digest, the handshakes that arrive together in one query.
SessionLookup = BatchedLoader[str, "dict[str, Any] | None"]


async def session_of(digest: str) -> dict[str, Any] | None:
    """The sign-in row (token_hash, token_id, expires_ms and the user's columns), or None."""
    rows = await fetch_all(_SESSION_SQL.format(match="= ?"), (digest,))
    return rows[0] if rows else None


async def sessions_by_digest(digests: list[str]) -> dict[str, dict[str, Any]]:
    rows = await fetch_all(
        _SESSION_SQL.format(match=f"IN ({', '.join('?' * len(digests))})"), digests)
    return {row["token_hash"]: row for row in rows}


def session_lookup() -> SessionLookup:
    return BatchedLoader(sessions_by_digest, None)


async def valid_token_hashes(token_hashes: list[str]) -> set[str]:
    """Which of `token_hashes` still name a sign-in (not signed out, disabled or expired away)."""
    if not token_hashes:
        return set()
    rows = await fetch_all(
        f"SELECT token_hash FROM im_token WHERE token_hash IN ({', '.join('?' * len(token_hashes))})",
        token_hashes)
    return {row["token_hash"] for row in rows}
