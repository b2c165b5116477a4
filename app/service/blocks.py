"""Blocking: a user blocks another, who then cannot message them, invite them or see their
presence (the rule itself is in app/service/access.py). Blocking ends their friendship and any
friend request between them; unblocking restores nothing by itself."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.model.database import within_deadline
from app.model.tables import Block, FriendRequest, User
from app.service import contacts
from app.service.context import ServiceContext
from app.util.errors import Conflict, NotFound, Refused


async def block(ctx: ServiceContext, user: User, other_id: int) -> User:
    other = await User.get_or_none(id=other_id)
    if other is None:
        raise NotFound("no such user")
    if other.id == user.id:
        raise Refused("you cannot block yourself")
    try:
        async with within_deadline(), in_transaction():
            await Block.create(owner_id=user.id, blocked_id=other.id)
            await FriendRequest.filter(Q(sender_id=user.id, recipient_id=other.id)
                                       | Q(sender_id=other.id, recipient_id=user.id)).delete()
            were_friends = await contacts.delete_friendship(user.id, other.id)
    except IntegrityError:
        raise Conflict("you already blocked this user") from None
    if were_friends:  # the hub drops them from each other's friends at once
        contacts.unfriended(ctx, user.id, other.id)
    contacts.tell(ctx, (user.id,), contacts.BLOCKS)
    return other


async def unblock(ctx: ServiceContext, user: User, other_id: int) -> None:
    if not await Block.filter(owner_id=user.id, blocked_id=other_id).delete():
        raise NotFound("this user is not blocked")
    contacts.tell(ctx, (user.id,), contacts.BLOCKS)


async def blocked_by(user: User) -> list[User]:
    """The users `user` blocked, most recent first."""
    ids = await Block.filter(owner_id=user.id).order_by("-id").values_list("blocked_id",
                                                                          flat=True)
    people = {u.id: u for u in await User.filter(id__in=list(ids))} if ids else {}
    return [people[i] for i in ids if i in people]


async def blocked_ids(user_id: int) -> set[int]:
    return set(await Block.filter(owner_id=user_id).values_list("blocked_id", flat=True))
