"""Who may do what in a conversation: the one rule that every route, frame and feature asks.

A conversation is seen from the asking user's side: (10, peer user id) or (11, group id).

- read (history, read marks, sync, search): a one-to-one conversation is always the user's own
  (only the messages between the two are ever answered); a group only while a member, and only
  what was said since joining;
- post (messages, read receipts, typing): one to one only to a friend, or to anyone while
  `chat.allow_strangers` is on; in a group only while a member;
- see members: a group only while a member;
- change a message (recall, edit, react) or answer it: only a message the user may read, in a
  conversation the user may post to; recalling someone else's needs `is_group_owner` (the
  group governance work extends this to admins), and so does mentioning everyone.

A disabled account has no valid session and never gets this far.

The chat socket asks with the hub's in-memory sets of the user's friends and groups (its cache,
kept in step by the hub's "joined" and "friends" events); HTTP routes ask the database.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from app.chat.wire import CMD_GROUP, CMD_SINGLE
from app.model.tables import Community, Friendship, Membership
from app.util.errors import BadRequest, Forbidden, NotFound

NOT_A_MEMBER = "only members can do this in a group"
NOT_A_FRIEND = "you can only message your friends"
NO_SUCH_MESSAGE = "no such message in your conversations"


def check_kind(cmd: int) -> None:
    if cmd not in (CMD_SINGLE, CMD_GROUP):
        raise BadRequest("cmd must be 10 (one to one) or 11 (group)")


async def joined_at(user_id: int, group_id: int) -> int:
    """When the user joined the group (ms): what they may read starts there. Forbidden for
    anyone who is not a member now."""
    membership = await Membership.get_or_none(community_id=group_id, user_id=user_id)
    if membership is None:
        raise Forbidden(NOT_A_MEMBER)
    return membership.created_ms


async def check_read(user_id: int, cmd: int, dstid: int) -> int:
    """May the user read this conversation? Answers the time its readable part starts."""
    check_kind(cmd)
    if cmd == CMD_GROUP:
        return await joined_at(user_id, dstid)
    return 0


async def check_members(user_id: int, group_id: int) -> None:
    await joined_at(user_id, group_id)


async def check_post(user_id: int, cmd: int, dstid: int, allow_strangers: bool) -> None:
    check_kind(cmd)
    if cmd == CMD_GROUP:
        await joined_at(user_id, dstid)
    elif dstid == user_id:
        raise BadRequest("you cannot send a message to yourself")
    elif not allow_strangers and not await Friendship.filter(
            owner_id=user_id, friend_id=dstid).exists():
        raise Forbidden(NOT_A_FRIEND)


def check_post_cached(user_id: int, cmd: int, dstid: int, allow_strangers: bool,
                      friends: Collection[int], groups: Collection[int]) -> None:
    """`check_post` against the hub's sets of the user's friends and groups (the socket's
    path: no query per frame)."""
    if cmd == CMD_GROUP:
        if dstid not in groups:
            raise Forbidden(NOT_A_MEMBER)
    elif dstid == user_id:
        raise BadRequest("you cannot send a message to yourself")
    elif not allow_strangers and dstid not in friends:
        raise Forbidden(NOT_A_FRIEND)


async def check_read_message(user_id: int, row: dict[str, Any] | None) -> tuple[int, int]:
    """The conversation (cmd, peer seen from the user's side) of a stored message the user
    may read now; NotFound for any other, whether it exists or not."""
    if row is None:
        raise NotFound(NO_SUCH_MESSAGE)
    if row["cmd"] == CMD_GROUP:
        membership = await Membership.get_or_none(community_id=row["community_id"],
                                                  user_id=user_id)
        if membership is None or row["created_ms"] < membership.created_ms:
            raise NotFound(NO_SUCH_MESSAGE)
        return CMD_GROUP, row["community_id"]
    if row["sender_id"] == user_id:
        return CMD_SINGLE, row["dst_user_id"]
    if row["dst_user_id"] == user_id:
        return CMD_SINGLE, row["sender_id"]
    raise NotFound(NO_SUCH_MESSAGE)


async def members_among(group_id: int, user_ids: list[int]) -> list[int]:
    """Which of `user_ids` are members of the group (in the order given)."""
    if not user_ids:
        return []
    found = set(await Membership.filter(community_id=group_id, user_id__in=user_ids)
                .values_list("user_id", flat=True))
    return [user_id for user_id in user_ids if user_id in found]


async def is_group_owner(user_id: int, group_id: int) -> bool:
    """Whether the user owns the group (may recall anyone's message there, mention all)."""
    return await Community.filter(id=group_id, owner_id=user_id).exists()
