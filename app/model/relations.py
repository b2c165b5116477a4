"""What the delivery hub loads from the database: users' groups and friends (at connect, many
users in one query during a reconnect storm, and all connected users after a broker gap)."""

from __future__ import annotations

from app.model.database import fetch_all


async def groups_and_friends_by_user(user_ids: list[int]
                                     ) -> dict[int, tuple[set[int], set[int]]]:
    """Each of `user_ids` with their groups and friends (users with neither are left out)."""
    found: dict[int, tuple[set[int], set[int]]] = {}
    for user_id, peer, is_group in await groups_and_friends_of(user_ids):
        groups, friends = found.setdefault(user_id, (set(), set()))
        (groups if is_group else friends).add(peer)
    return found


async def groups_and_friends_of(user_ids: list[int]) -> list[tuple[int, int, bool]]:
    """(user, peer, peer is a group) for the groups and friends of each of `user_ids`."""
    marks = ", ".join("?" * len(user_ids))
    rows = await fetch_all(
        "SELECT user_id AS owner, community_id AS peer, 1 AS kind FROM im_membership "
        f"WHERE user_id IN ({marks}) UNION ALL SELECT owner_id, friend_id, 2 FROM "
        f"im_friendship WHERE owner_id IN ({marks})", user_ids + user_ids)
    return [(r["owner"], r["peer"], r["kind"] == 1) for r in rows]
