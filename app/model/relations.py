"""What the delivery hub loads from the database: a user's groups and friends (at connect, and
for many users after a broker gap), and which of a set of sign-ins are still valid."""

from __future__ import annotations

from app.model.database import fetch_all

# A user's groups (kind 1) and friends (kind 2) in one round trip at connect.
_GROUPS_AND_FRIENDS_SQL = (
    "SELECT 1 AS kind, community_id AS peer FROM im_membership WHERE user_id = ? "
    "UNION ALL SELECT 2 AS kind, friend_id AS peer FROM im_friendship WHERE owner_id = ?")


async def groups_and_friends(user_id: int) -> tuple[set[int], set[int]]:
    """The user's groups and friends."""
    rows = await fetch_all(_GROUPS_AND_FRIENDS_SQL, (user_id, user_id))
    return ({r["peer"] for r in rows if r["kind"] == 1},
            {r["peer"] for r in rows if r["kind"] == 2})


async def groups_and_friends_of(user_ids: list[int]) -> list[tuple[int, int, bool]]:
    """(user, peer, peer is a group) for the groups and friends of each of `user_ids`."""
    marks = ", ".join("?" * len(user_ids))
    rows = await fetch_all(
        "SELECT user_id AS owner, community_id AS peer, 1 AS kind FROM im_membership "
        f"WHERE user_id IN ({marks}) UNION ALL SELECT owner_id, friend_id, 2 FROM "
        f"im_friendship WHERE owner_id IN ({marks})", user_ids + user_ids)
    return [(r["owner"], r["peer"], r["kind"] == 1) for r in rows]


async def valid_token_hashes(token_hashes: list[str]) -> set[str]:
    """Which of `token_hashes` still name a sign-in (not signed out, disabled or expired away)."""
    if not token_hashes:
        return set()
    rows = await fetch_all(
        f"SELECT token_hash FROM im_token WHERE token_hash IN ({', '.join('?' * len(token_hashes))})",
        token_hashes)
    return {row["token_hash"] for row in rows}
