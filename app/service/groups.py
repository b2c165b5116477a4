"""Groups (the article's "community"): create, join by name, list one's groups and members."""

from __future__ import annotations

from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.model.database import within_deadline
from app.model.tables import Community, Membership, User
from app.service import access
from app.service.context import ServiceContext
from app.util.errors import BadRequest, Conflict, NotFound
from app.util.security import check_local_link

MAX_NAME = 40


def public_group(group: Community) -> dict[str, Any]:
    """The article's community JSON."""
    return {
        "id": group.id,
        "name": group.name,
        "ownerid": group.owner_id,  # type: ignore[attr-defined]
        "icon": group.icon,
        "memo": group.memo,
        "cate": group.cate,
        "createat": group.created_ms,
    }


def check_icon(icon: str) -> str:
    return check_local_link(icon, "icon")


async def create_group(
    ctx: ServiceContext, owner: User, name: str, icon: str = "", memo: str = "", cate: int = 1
) -> Community:
    if not name:
        raise BadRequest("name is required")
    check_icon(icon)
    if await Community.filter(name=name).exists():
        raise Conflict("a group with this name already exists")
    try:
        async with within_deadline(), in_transaction():
            group = await Community.create(name=name, owner=owner, icon=icon, memo=memo, cate=cate)
            await Membership.create(community=group, user=owner)
    except IntegrityError:
        raise Conflict("a group with this name already exists") from None
    ctx.hub.member_joined(group.id, owner.id)
    return group


async def join_group(ctx: ServiceContext, user: User, name: str) -> Community:
    """Joining a group one is already in is harmless and answers the group."""
    group = await Community.get_or_none(name=name)
    if group is None:
        raise NotFound("no group has this name")
    if not await Membership.filter(community_id=group.id, user_id=user.id).exists():
        try:
            await Membership.create(community=group, user=user)
        except IntegrityError:
            return group  # joined concurrently: the same outcome
        ctx.hub.member_joined(group.id, user.id)
    return group


async def groups_of(user: User) -> list[Community]:
    ids = await Membership.filter(user_id=user.id).values_list("community_id", flat=True)
    return list(await Community.filter(id__in=list(ids)).order_by("id")) if ids else []


async def is_member(group_id: int, user_id: int) -> bool:
    return await Membership.filter(community_id=group_id, user_id=user_id).exists()


async def members_of(user: User, group_id: int) -> list[User]:
    await access.check_members(user.id, group_id)
    ids = await Membership.filter(community_id=group_id).values_list("user_id", flat=True)
    return list(await User.filter(id__in=list(ids)).order_by("id"))
