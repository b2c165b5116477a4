"""Groups (the article's "community"): create, join by name (public groups only), list one's
groups and members with their roles. Governing a group (invite, remove, leave, rename, icon,
notice, privacy, admins, hand-over, dissolve) is app/service/group_admin.py's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.model.database import within_deadline
from app.model.tables import ROLE_MEMBER, ROLE_OWNER, Community, Membership, User, now_ms
from app.service import access, audit, file_access
from app.service.context import ServiceContext
from app.service.group_notices import Notice, Origin, after_change, store_notice
from app.util.errors import BadRequest, Conflict, Forbidden, NotFound, Refused
from app.util.security import check_local_link

MAX_NAME = 40
MAX_MEMO = 140
PRIVATE_GROUP = "this group is private: a member must invite you"


def public_group(group: Community, role: int | None = None) -> dict[str, Any]:
    """The article's community JSON, plus `private` (0/1) and, when known, the asking user's
    `role` ("owner", "admin" or "member")."""
    answer = {
        "id": group.id,
        "name": group.name,
        "ownerid": group.owner_id,  # type: ignore[attr-defined]
        "icon": group.icon,
        "memo": group.memo,
        "cate": group.cate,
        "createat": group.created_ms,
        "private": 1 if group.is_private else 0,
    }
    if role is not None:
        answer["role"] = access.ROLE_NAMES[role]
    return answer


async def check_icon(user_id: int, icon: str) -> str:
    """A local link to a file the user may download."""
    check_local_link(icon, "icon")
    await file_access.check_links(user_id, "icon", icon)
    return icon


@contextlib.asynccontextmanager
async def changing(group_id: int) -> AsyncIterator[tuple[BaseDBAsyncClient, Community]]:
    """A transaction that changes one group, holding its row (MySQL: FOR UPDATE; SQLite writes
    one at a time anyway): concurrent changes to a group's members happen one after another,
    so its member cap and its one owner hold. A group that is not there is refused as to a
    non-member (whether an id exists is nobody's business)."""
    async with within_deadline(), in_transaction() as connection:
        group = await Community.filter(id=group_id).select_for_update().using_db(
            connection).first()
        if group is None:
            raise Forbidden(access.NOT_A_MEMBER)
        yield connection, group


async def check_room(connection: BaseDBAsyncClient, ctx: ServiceContext, group_id: int) -> None:
    """Refuse one more member beyond chat.max_group_members."""
    cap = ctx.settings.chat.max_group_members
    if await Membership.filter(community_id=group_id).using_db(connection).count() >= cap:
        raise Refused(f"this group is full: it has {cap} members, the most a group may have")


async def create_group(
    ctx: ServiceContext, owner: User, name: str, icon: str = "", memo: str = "", cate: int = 1,
    private: bool = False, address: str = "",
) -> Community:
    if not name:
        raise BadRequest("name is required")
    await check_icon(owner.id, icon)
    if await Community.filter(name=name).exists():
        raise Conflict("a group with this name already exists")
    try:
        async with within_deadline(), in_transaction():
            group = await Community.create(name=name, owner=owner, icon=icon, memo=memo, cate=cate,
                                           is_private=private)
            await Membership.create(community=group, user=owner, role=ROLE_OWNER)
    except IntegrityError:
        raise Conflict("a group with this name already exists") from None
    ctx.hub.member_joined(group.id, owner.id)
    await audit.record_quietly(audit.GROUP_CREATE, actor=owner,
                               target=f"group {group.id} {group.name}", address=address,
                               detail="private" if private else "public")
    return group


async def join_group(ctx: ServiceContext, user: User, name: str, address: str = ""
                     ) -> Community:
    """Join a public group by its name. Joining a group one is already in is harmless and
    answers the group; a private group is refused (by invitation only)."""
    found = await Community.get_or_none(name=name)
    if found is None:
        raise NotFound("no group has this name")
    if await access.member_role(user.id, found.id) is not None:
        return found
    if found.is_private:
        raise Forbidden(PRIVATE_GROUP)
    try:
        async with changing(found.id) as (connection, group):
            if group.is_private:  # made private meanwhile
                raise Forbidden(PRIVATE_GROUP)
            if await Membership.filter(community_id=group.id, user_id=user.id).using_db(
                    connection).exists():
                return group  # joined concurrently: the same outcome
            await check_room(connection, ctx, group.id)
            joined_ms = now_ms()
            await Membership.create(community=group, user=user, role=ROLE_MEMBER,
                                    created_ms=joined_ms, using_db=connection)
            stored = await store_notice(connection, group.id, Notice("joined", user), joined_ms)
    except IntegrityError:
        return found  # joined concurrently: the same outcome
    await after_change(ctx, [stored], group=group, origin=Origin(address), joined=user.id)
    return group


async def groups_of(user: User) -> list[tuple[Community, int]]:
    """The user's groups, each with the user's role in it."""
    roles = dict(await Membership.filter(user_id=user.id).values_list("community_id", "role"))
    if not roles:
        return []
    return [(group, roles[group.id])
            for group in await Community.filter(id__in=list(roles)).order_by("id")]


async def is_member(group_id: int, user_id: int) -> bool:
    return await Membership.filter(community_id=group_id, user_id=user_id).exists()


async def members_of(user: User, group_id: int) -> list[tuple[User, int]]:
    """The group's members with their roles, for a member to see."""
    await access.check_members(user.id, group_id)
    roles = dict(await Membership.filter(community_id=group_id).values_list("user_id", "role"))
    return [(member, roles[member.id])
            for member in await User.filter(id__in=list(roles)).order_by("id")]
