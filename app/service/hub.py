"""The hub: which connections each user has open, which online users are in which group, and
delivery of events to them. Services call it only after their transaction has committed."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("imchat.hub")


class Hub:
    def __init__(self) -> None:
        self.connections: dict[int, set[Any]] = {}
        self.group_members: dict[int, set[int]] = {}

    def session_ended(self, user_id: int, token_hash: str | None) -> None:
        """Close the user's sockets opened with that token (all of them when None)."""

    def friendship_added(self, user_id: int, friend_id: int) -> None:
        """Two users became friends."""

    def member_joined(self, group_id: int, user_id: int) -> None:
        """A user joined a group: route the group's messages to their open connections."""
        if user_id in self.connections:
            self.group_members.setdefault(group_id, set()).add(user_id)

    def is_online(self, user_id: int) -> bool:
        return bool(self.connections.get(user_id))
