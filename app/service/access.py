"""Who may do what in a conversation: the one rule that every route, frame and feature asks.

A conversation is seen from the asking user's side: (10, peer user id) or (11, group id).

- read (history, read marks, sync, search): a one-to-one conversation is always the user's own
  (only the messages between the two are ever answered); a group only while a member, and only
  what was said since joining;
- post (messages, read receipts, typing): one to one only to a friend, or to anyone while
  `chat.allow_strangers` is on, and never to someone who blocked the sender; in a group only
  while a member;
- see members: a group only while a member;
- invite a user (into a group): never someone who blocked the inviter;
- govern a group (app/service/group_admin.py): its owner and admins invite, remove members,
  rename it and change its icon, notice and privacy; only the owner makes and unmakes admins,
  removes an admin, hands the group over and dissolves it; an admin removes members only; nobody
  removes the owner. `group_role` answers a user's role for any feature that needs it.

Leaving or being removed deletes the membership: from then on the user reads nothing of the
group (not even what was said before) and gets none of its messages.
- change a message (recall, edit, react) or answer it: only a message the user may read, in a
  conversation the user may post to; recalling someone else's needs `is_group_owner`;
  mentioning everyone `may_mention_all` (the owner and admins).

Blocking also ends the friendship (app/service/contacts.py), so the socket's cached check (the
user's friends) already refuses a blocked user; with strangers allowed the socket asks
`check_stranger`, which reads the blocks.

`readable` says the same read rule for many conversations at once (search over all of a user's
conversations): the user's one-to-one conversations (all, or the one with a peer) and the
groups they belong to with the time each part starts; its `allows(row)` is the rule on one
stored message. `readable_in` says it for the few groups of some stored messages (who may
download a file those messages link: app/service/file_access.py).

A disabled account has no valid session and never gets this far.

The chat socket asks with the hub's in-memory sets of the user's friends and groups (its cache,
kept in step by the hub's "joined" and "friends" events); HTTP routes ask the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from app.chat.wire import CMD_GROUP, CMD_SINGLE
from app.model.tables import (
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    Block,
    Friendship,
    Membership,
    User,
)
from app.util.errors import BadRequest, Forbidden, NotFound

NOT_A_MEMBER = "only members can do this in a group"
NOT_A_FRIEND = "you can only message your friends"
NOT_AN_ADMIN = "only the group's owner and admins can do this"
NOT_THE_OWNER = "only the group's owner can do this"
ROLE_NAMES = {ROLE_MEMBER: "member", ROLE_ADMIN: "admin", ROLE_OWNER: "owner"}
BLOCKED = "this user does not accept messages or invitations from you"
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


async def is_blocked_by(user_id: int, other_id: int) -> bool:
    """Whether `other_id` blocked `user_id`."""
    return await Block.filter(owner_id=other_id, blocked_id=user_id).exists()


async def check_post(user_id: int, cmd: int, dstid: int, allow_strangers: bool) -> None:
    check_kind(cmd)
    if cmd == CMD_GROUP:
        await joined_at(user_id, dstid)
    elif dstid == user_id:
        raise BadRequest("you cannot send a message to yourself")
    elif await is_blocked_by(user_id, dstid):
        raise Forbidden(BLOCKED)
    elif not allow_strangers and not await Friendship.filter(
            owner_id=user_id, friend_id=dstid).exists():
        raise Forbidden(NOT_A_FRIEND)


async def check_stranger(user_id: int, dstid: int) -> None:
    """A one-to-one message to someone who need not be a friend (`chat.allow_strangers`): the
    account must exist and be enabled, and must not have blocked the sender."""
    if not await User.filter(id=dstid, disabled=False).exists():
        raise BadRequest("no such user")
    if await is_blocked_by(user_id, dstid):
        raise Forbidden(BLOCKED)


async def check_invite(user_id: int, invitee_id: int) -> None:
    """May the user invite (add) `invitee_id` into a group? Not if the invitee blocked them."""
    if await is_blocked_by(user_id, invitee_id):
        raise Forbidden(BLOCKED)


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
    """Whether the user owns the group (may recall anyone's message there)."""
    return await member_role(user_id, group_id) == ROLE_OWNER


async def may_mention_all(user_id: int, group_id: int) -> bool:
    """Whether the user may mention everyone in the group: its owner and admins."""
    role = await member_role(user_id, group_id)
    return role is not None and role >= ROLE_ADMIN


@dataclasses.dataclass(frozen=True)
class Readable:
    """What a user may read: their one-to-one conversations (all of them when `one_to_one` and
    `peer` is None, only the one with `peer` otherwise) and the groups in `groups` (group id ->
    joined at, ms: what was said from then on)."""

    user_id: int
    one_to_one: bool
    peer: int | None
    groups: Mapping[int, int]

    def allows(self, row: Mapping[str, Any]) -> bool:
        """May the user read this stored message (cmd, sender_id, dst_user_id, community_id,
        created_ms)?"""
        if row["cmd"] == CMD_GROUP:
            joined = self.groups.get(int(row["community_id"]))
            return joined is not None and int(row["created_ms"]) >= joined
        sender, receiver = int(row["sender_id"]), int(row["dst_user_id"])
        if not self.one_to_one or self.user_id not in (sender, receiver):
            return False
        return self.peer is None or self.peer == (receiver if sender == self.user_id else sender)


async def readable(user_id: int, cmd: int | None = None, dstid: int | None = None) -> Readable:
    """The conversations the user may read: all of them, or the one (cmd, dstid) (Forbidden
    for a group the user is not a member of, as `check_read`)."""
    if cmd is None:
        memberships = await Membership.filter(user_id=user_id).values_list(
            "community_id", "created_ms")
        return Readable(user_id, True, None, {int(g): int(ms) for g, ms in memberships})
    if dstid is None:
        raise BadRequest("give cmd and dstid together, or neither")
    joined = await check_read(user_id, cmd, dstid)
    if cmd == CMD_GROUP:
        return Readable(user_id, False, None, {dstid: joined})
    return Readable(user_id, True, dstid, {})


async def readable_in(user_id: int, group_ids: Collection[int]) -> Readable:
    """What the user may read among their one-to-one conversations and the groups
    `group_ids` (each looked up by the membership's own index; for a few stored messages)."""
    memberships = await Membership.filter(
        user_id=user_id, community_id__in=list(group_ids)).values_list(
        "community_id", "created_ms") if group_ids else []
    return Readable(user_id, True, None, {int(g): int(ms) for g, ms in memberships})


# -- group roles -------------------------------------------------------------------------------

async def member_role(user_id: int, group_id: int) -> int | None:
    """The user's role in the group (ROLE_*), None when not a member."""
    roles = await Membership.filter(community_id=group_id, user_id=user_id).values_list(
        "role", flat=True)
    return int(roles[0]) if roles else None


async def group_role(user_id: int, group_id: int) -> str | None:
    """"owner", "admin" or "member"; None when the user is not in the group. For any feature
    that gives owners and admins more (recall of others' messages, @all)."""
    role = await member_role(user_id, group_id)
    return None if role is None else ROLE_NAMES[role]


async def check_manage(user_id: int, group_id: int) -> int:
    """May the user govern the group (invite, remove, rename, icon, notice, privacy)? Answers
    their role: ROLE_ADMIN or ROLE_OWNER."""
    role = await member_role(user_id, group_id)
    if role is None:
        raise Forbidden(NOT_A_MEMBER)
    if role < ROLE_ADMIN:
        raise Forbidden(NOT_AN_ADMIN)
    return role


async def check_owner(user_id: int, group_id: int) -> None:
    """Is the user the group's owner (admins, hand-over, dissolving)?"""
    if await check_manage(user_id, group_id) != ROLE_OWNER:
        raise Forbidden(NOT_THE_OWNER)


def check_remove(actor_role: int, target_role: int) -> None:
    """May someone of `actor_role` remove a member of `target_role`? The owner anyone but
    themselves (the owner leaves by handing over or dissolving); an admin plain members only."""
    if target_role == ROLE_OWNER:
        raise Forbidden("the owner cannot be removed")
    if target_role >= actor_role:
        raise Forbidden(NOT_THE_OWNER if target_role == ROLE_ADMIN else NOT_AN_ADMIN)
