"""Group notices: each change to a group (joined, added, left, removed, renamed, icon, notice,
privacy, admins, owner, dissolved) is a message of kind MEDIA_NOTICE in the group's
conversation. It is inserted in the same transaction as the change it reports, so the two are
stored together or not at all, gets a server id like any message (history, sync and the v1
offline push carry it), and is published to the group only after the commit. The article's
client gets its readable line as a text message (app/chat/wire.py's legacy_message).

After the commit, `after_change` also records the ownership and membership changes in the
audit log (app/service/audit.py): who, which group, whom, from which address, and whether a
site administrator made the change from the admin console.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, NamedTuple

from tortoise.backends.base.client import BaseDBAsyncClient

from app.chat.broker import Envelope
from app.chat.wire import (
    CMD_GROUP,
    GROUP_EVENTS,
    MEDIA_NOTICE,
    SERVER_CID_PREFIX,
    encode,
    legacy_message,
    wire_message,
)
from app.model.tables import Community, Message, User, now_ms
from app.service import audit
from app.service.context import ServiceContext

# The readable line of each event (what v1 clients and the conversation list show).
_LINES = {
    "joined": "{actor} joined the group",
    "added": "{actor} added {target} to the group",
    "left": "{actor} left the group",
    "removed": "{actor} removed {target} from the group",
    "renamed": "{actor} renamed the group to \"{value}\"",
    "icon": "{actor} changed the group's icon",
    "notice": "{actor} changed the group notice: {value}",
    "private": "{actor} made the group private: new members join by invitation",
    "public": "{actor} made the group public: anyone who knows its name can join",
    "admin": "{actor} made {target} an admin",
    "unadmin": "{actor} removed {target} as an admin",
    "owner": "{actor} handed the group over to {target}",
    "dissolved": "{actor} dissolved the group",
}
assert set(_LINES) == set(GROUP_EVENTS)

# The events the audit log records (ownership and membership); renames, icons, notices and
# privacy are in the group's own history only.
_AUDITED = {
    "joined": audit.GROUP_JOIN,
    "added": audit.GROUP_ADD,
    "left": audit.GROUP_LEAVE,
    "removed": audit.GROUP_REMOVE,
    "admin": audit.GROUP_ADMIN_GRANT,
    "unadmin": audit.GROUP_ADMIN_REVOKE,
    "owner": audit.GROUP_TRANSFER,
    "dissolved": audit.GROUP_DISSOLVE,
}


def display_name(user: User) -> str:
    """How a notice names a user: the nickname (the mobile is not everyone's to see)."""
    return user.nickname or f"user {user.id}"


@dataclasses.dataclass(frozen=True)
class Notice:
    """One change to report: who did what, to whom, with which new value or icon."""

    event: str
    actor: User
    target: User | None = None
    value: str = ""
    icon: str = ""

    def line(self) -> str:
        return _LINES[self.event].format(
            actor=display_name(self.actor),
            target=display_name(self.target) if self.target else "", value=self.value)

    def memo(self) -> str:
        return f"{self.event}:{self.value}" if self.value else self.event


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a change was asked from, for the audit log: the client's address, and whether a
    site administrator made it from the admin console (holding no role in the group)."""

    address: str = ""
    console: bool = False


class Stored(NamedTuple):
    """A notice and its stored row (as app/model/message_store.py reads rows)."""

    notice: Notice
    row: dict[str, Any]


async def store_notice(connection: BaseDBAsyncClient, group_id: int, notice: Notice,
                       created_ms: int | None = None) -> Stored:
    """Insert the notice into the group's conversation inside the caller's transaction."""
    message = await Message.create(
        using_db=connection, cmd=CMD_GROUP, sender_id=notice.actor.id, dst_user_id=None,
        community_id=group_id, cid=f"{SERVER_CID_PREFIX}g.{secrets.token_urlsafe(12)}",
        media=MEDIA_NOTICE, content=notice.line(), pic="", url=notice.icon,
        memo=notice.memo(), amount=notice.target.id if notice.target else 0,
        created_ms=created_ms or now_ms())
    return Stored(notice, {
        "id": message.id, "cmd": CMD_GROUP, "sender_id": message.sender_id, "dst_user_id": None,
        "community_id": group_id, "cid": message.cid, "media": MEDIA_NOTICE,
        "content": message.content, "pic": "", "url": message.url, "memo": message.memo,
        "amount": message.amount, "created_ms": message.created_ms})


def publish_notice(ctx: ServiceContext, row: dict[str, Any]) -> None:
    """After the commit: to every member's sessions, on every process (a v1 one gets text)."""
    message = wire_message(row)
    legacy = legacy_message(message)
    ctx.hub.publish(Envelope(encode(message), group_id=row["community_id"],
                             message_id=row["id"],
                             legacy_payload=encode(legacy) if legacy is not None else b""))


async def after_change(ctx: ServiceContext, stored: list[Stored], *, group: Community,
                       origin: Origin, joined: int = 0, left: int = 0, dissolved: bool = False,
                       detail: str = "") -> None:
    """After the commit of any change to a group: index a new member first (so their sessions
    get the notice of their own joining), publish the notices, then let a leaving member (or
    everybody, for a dissolved group) go. Then the audit log records the ownership and
    membership changes among the notices (`detail` adds to each entry's detail)."""
    if joined:
        ctx.hub.member_joined(group.id, joined)
    for item in stored:
        publish_notice(ctx, item.row)
    if left:
        ctx.hub.member_left(group.id, left)
    if dissolved:
        ctx.hub.group_dissolved(group.id)
    for item in stored:
        await _audit(item.notice, group, origin, detail)


async def _audit(notice: Notice, group: Community, origin: Origin, detail: str) -> None:
    """One audit entry for a change of owner or members. The change is committed and told:
    a failure to record it is logged, not answered to the client as if it had not happened."""
    action = _AUDITED.get(notice.event)
    if action is None:
        return
    parts = [f"user {notice.target.id} {notice.target.mobile}"] if notice.target else []
    if detail:
        parts.append(detail)
    if origin.console:
        parts.append("by a site administrator")
    await audit.record_quietly(action, actor=notice.actor, target=f"group {group.id} {group.name}",
                               address=origin.address, detail=", ".join(parts))
