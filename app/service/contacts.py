"""Friendships: add a friend (at once and mutual, as in the article, or by a request the other
accepts or declines when `contacts.require_approval` is on), list and remove friends, and tell
a user's devices when any of that changed (a v2 `contacts` frame; the client reloads)."""

from __future__ import annotations

from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app.chat.broker import Envelope
from app.chat.wire import CMD_CONTACTS, encode
from app.model.database import within_deadline
from app.model.tables import Block, FriendRequest, Friendship, User
from app.service.context import ServiceContext
from app.util.errors import Conflict, Forbidden, NotFound, Refused

REQUEST_REFUSED = "this user does not accept friend requests from you"
# What a `contacts` frame says changed.
FRIENDS, REQUESTS, BLOCKS = "friends", "requests", "blocks"


def tell(ctx: ServiceContext, user_ids: tuple[int, ...], what: str) -> None:
    """Tell the users' v2 devices that their friends, requests or blocks changed."""
    payload = encode({"cmd": CMD_CONTACTS, "what": what})
    ctx.hub.publish(Envelope(payload, user_ids=user_ids, v2_only=True))


async def person(mobile: str | None = None, user_id: int | None = None) -> User:
    """An enabled account by mobile or id; NotFound otherwise."""
    found = (await User.get_or_none(mobile=mobile.lower()) if mobile
             else await User.get_or_none(id=user_id or 0))
    if found is None or found.disabled:
        raise NotFound("no user has this mobile" if mobile else "no such user")
    return found


async def _check_may_befriend(user: User, other: User) -> None:
    if other.id == user.id:
        raise Refused("you cannot add yourself as a friend")
    if await Friendship.filter(owner_id=user.id, friend_id=other.id).exists():
        raise Conflict("you are already friends")
    blocks = set(await Block.filter(Q(owner_id=user.id, blocked_id=other.id)
                                    | Q(owner_id=other.id, blocked_id=user.id))
                 .values_list("owner_id", flat=True))
    if user.id in blocks:
        raise Refused("you blocked this user; unblock them first")
    if blocks:
        raise Forbidden(REQUEST_REFUSED)


async def _befriend(ctx: ServiceContext, user: User, friend: User) -> None:
    """Both directions at once; any request between the two is answered by it."""
    try:
        async with within_deadline(), in_transaction():
            await Friendship.create(owner_id=user.id, friend_id=friend.id)
            if not await Friendship.filter(owner_id=friend.id, friend_id=user.id).exists():
                await Friendship.create(owner_id=friend.id, friend_id=user.id)
            await FriendRequest.filter(Q(sender_id=user.id, recipient_id=friend.id)
                                       | Q(sender_id=friend.id, recipient_id=user.id)).delete()
    except IntegrityError:
        raise Conflict("you are already friends") from None
    ctx.hub.friendship_added(user.id, friend.id)
    tell(ctx, (user.id, friend.id), FRIENDS)


async def add_friend(ctx: ServiceContext, user: User, friend_mobile: str = "",
                     friend_id: int | None = None, memo: str = "") -> tuple[User, bool]:
    """Befriend by mobile (the article's way) or id. Answers the other user and whether a
    request now waits for them (`contacts.require_approval`, unless they asked first)."""
    friend = await person(friend_mobile or None, friend_id)
    await _check_may_befriend(user, friend)
    asked_first = await FriendRequest.filter(sender_id=friend.id, recipient_id=user.id).exists()
    if not ctx.settings.contacts.require_approval or asked_first:
        await _befriend(ctx, user, friend)
        return friend, False
    try:
        await FriendRequest.create(sender_id=user.id, recipient_id=friend.id, memo=memo)
    except IntegrityError:
        raise Conflict("you already asked; wait for an answer") from None
    tell(ctx, (user.id, friend.id), REQUESTS)
    return friend, True


async def answer_request(ctx: ServiceContext, user: User, sender_id: int, accept: bool) -> User:
    """Accept or decline the request `sender_id` sent the user."""
    request = await FriendRequest.get_or_none(sender_id=sender_id, recipient_id=user.id)
    if request is None:
        raise NotFound("no such friend request")
    sender = await User.get(id=sender_id)
    if not accept or sender.disabled:
        await request.delete()
        tell(ctx, (user.id, sender_id), REQUESTS)
        return sender
    await _befriend(ctx, user, sender)
    return sender


async def decline_request(ctx: ServiceContext, user: User, sender_id: int) -> None:
    await answer_request(ctx, user, sender_id, accept=False)


async def cancel_request(ctx: ServiceContext, user: User, recipient_id: int) -> None:
    deleted = await FriendRequest.filter(sender_id=user.id, recipient_id=recipient_id).delete()
    if not deleted:
        raise NotFound("no such friend request")
    tell(ctx, (user.id, recipient_id), REQUESTS)


async def requests_of(user: User) -> dict[str, list[tuple[User, FriendRequest]]]:
    """The user's pending requests: `incoming` (to answer) and `outgoing` (waiting)."""
    pending = await FriendRequest.filter(Q(sender_id=user.id) | Q(recipient_id=user.id)
                                         ).order_by("-created_ms", "-id")
    others = {r.recipient_id if r.sender_id == user.id else r.sender_id for r in pending}
    people = {u.id: u for u in await User.filter(id__in=list(others), disabled=False)}
    answer: dict[str, list[tuple[User, FriendRequest]]] = {"incoming": [], "outgoing": []}
    for request in pending:
        outgoing = request.sender_id == user.id
        other = people.get(request.recipient_id if outgoing else request.sender_id)
        if other is not None:
            answer["outgoing" if outgoing else "incoming"].append((other, request))
    return answer


async def delete_friendship(user_id: int, other_id: int) -> bool:
    """Delete a friendship both ways (in the caller's transaction); whether there was one.
    The caller calls `unfriended` after its commit."""
    return bool(await Friendship.filter(Q(owner_id=user_id, friend_id=other_id)
                                        | Q(owner_id=other_id, friend_id=user_id)).delete())


def unfriended(ctx: ServiceContext, user_id: int, other_id: int) -> None:
    """After the commit: the hub stops presence and messages between the two at once, and both
    users' devices reload their friends."""
    ctx.hub.friendship_removed(user_id, other_id)
    tell(ctx, (user_id, other_id), FRIENDS)


async def remove_friend(ctx: ServiceContext, user: User, friend_id: int) -> None:
    if not await delete_friendship(user.id, friend_id):
        raise NotFound("this user is not your friend")
    unfriended(ctx, user.id, friend_id)


async def friends_of(user: User) -> list[User]:
    ids = await Friendship.filter(owner_id=user.id).values_list("friend_id", flat=True)
    return list(await User.filter(id__in=list(ids)).order_by("id")) if ids else []


def request_card(card: dict[str, Any], request: FriendRequest) -> dict[str, Any]:
    return {**card, "request_memo": request.memo, "requested_at": request.created_ms}
