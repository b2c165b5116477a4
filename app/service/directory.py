"""The people directory: every active user, listed or found by nickname (prefix or substring,
Chinese or Latin, Latin letters in any case) or by an exact mobile number, each answered as the
viewer may see them (app/service/users.card_for) with how they relate to the viewer. Off when
`contacts.directory` is false.

A mobile number finds its owner only when typed whole: the directory must not be a way to
collect the numbers of people who are not your friends (cards show them to friends only)."""

from __future__ import annotations

from typing import Any

from app.model.database import fetch_all
from app.model.tables import Block, FriendRequest, User
from app.service import users
from app.service.context import ServiceContext
from app.util.errors import Forbidden

MAX_PAGE = 50
_ESCAPE = "!"


def _like_escape(text: str) -> str:
    return "".join(_ESCAPE + c if c in "%_" + _ESCAPE else c for c in text)


async def _matching_ids(viewer_id: int, query: str, offset: int, limit: int
                        ) -> tuple[list[int], int]:
    """Ids of one page of matches (nickname prefixes first, then by nickname) and the total."""
    where = "disabled = 0 AND id <> ?"
    values: list[Any] = [viewer_id]
    order = "nickname, id"
    if query:
        needle = _like_escape(query.lower())
        where += f" AND (LOWER(nickname) LIKE ? ESCAPE '{_ESCAPE}' OR mobile = ?)"
        values += ["%" + needle + "%", query.lower()]
        order = f"CASE WHEN LOWER(nickname) LIKE ? ESCAPE '{_ESCAPE}' THEN 0 ELSE 1 END, " + order
    total = (await fetch_all(f"SELECT COUNT(*) AS n FROM im_user WHERE {where}", values))[0]["n"]
    page_values = values + ([needle + "%"] if query else []) + [limit, offset]
    rows = await fetch_all(f"SELECT id FROM im_user WHERE {where} ORDER BY {order} "
                           "LIMIT ? OFFSET ?", page_values)
    return [row["id"] for row in rows], int(total)


async def _relations(viewer_id: int, ids: list[int]) -> dict[int, str]:
    """How each of `ids` relates to the viewer, when it does: requested (the viewer asked),
    incoming (they asked), blocked (the viewer blocked them)."""
    relation: dict[int, str] = {}
    for request in await FriendRequest.filter(sender_id=viewer_id, recipient_id__in=ids):
        relation[request.recipient_id] = "requested"
    for request in await FriendRequest.filter(recipient_id=viewer_id, sender_id__in=ids):
        relation[request.sender_id] = "incoming"
    for blocked in await Block.filter(owner_id=viewer_id, blocked_id__in=ids):
        relation[blocked.blocked_id] = "blocked"
    return relation


async def search(ctx: ServiceContext, viewer: User, query: str, offset: int = 0,
                 limit: int = 20) -> tuple[list[dict[str, Any]], int]:
    """One page of the directory for `query` ("" lists everyone) and the number of matches."""
    if not ctx.settings.contacts.directory:
        raise Forbidden("the people directory is turned off on this server")
    ids, total = await _matching_ids(viewer.id, query.strip(), offset, min(limit, MAX_PAGE))
    if not ids:
        return [], total
    people = {u.id: u for u in await User.filter(id__in=ids)}
    friends = await users.friend_ids_of(viewer.id)
    online = await ctx.hub.online_among([i for i in ids if i in friends])
    relation = await _relations(viewer.id, ids)
    cards = []
    for user_id in ids:
        card = users.card_for(viewer, people[user_id], friends, online)
        card["relation"] = "friend" if user_id in friends else relation.get(user_id, "")
        cards.append(card)
    return cards, total
