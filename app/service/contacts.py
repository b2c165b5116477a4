"""Friendships: add a friend by mobile (mutual, as in the article), list friends."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.model.database import within_deadline
from app.model.tables import Friendship, User
from app.service.context import ServiceContext
from app.util.errors import Conflict, NotFound, Refused


async def add_friend(ctx: ServiceContext, user: User, friend_mobile: str) -> User:
    friend = await User.get_or_none(mobile=friend_mobile.lower())
    if friend is None or friend.disabled:
        raise NotFound("no user has this mobile")
    if friend.id == user.id:
        raise Refused("you cannot add yourself as a friend")
    if await Friendship.filter(owner_id=user.id, friend_id=friend.id).exists():
        raise Conflict("you are already friends")
    try:
        async with within_deadline(), in_transaction():
            await Friendship.create(owner_id=user.id, friend_id=friend.id)
            if not await Friendship.filter(owner_id=friend.id, friend_id=user.id).exists():
                await Friendship.create(owner_id=friend.id, friend_id=user.id)
    except IntegrityError:
        raise Conflict("you are already friends") from None
    ctx.hub.friendship_added(user.id, friend.id)
    return friend


async def friends_of(user: User) -> list[User]:
    ids = await Friendship.filter(owner_id=user.id).values_list("friend_id", flat=True)
    return list(await User.filter(id__in=list(ids)).order_by("id")) if ids else []

