"""Reading chat over HTTP: one conversation's history (paged, or around a message) with each
message in its current state (edited, reactions, the quoted message of a reply), the
conversation list with unread counts, mentions and mutes, muting, and read receipts. Each asks
the access rule first, then the message store (app/model/message_store.py); sending (and
changing messages) is the chat socket's (app/chat/).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.chat.wire import (
    CMD_GROUP,
    MEDIA_EDIT,
    MEDIA_REACT,
    MEDIA_UNREACT,
    REACTIONS,
    quote_of,
    wire_message,
    within_bytes,
)
from app.model import message_store
from app.service import access

if TYPE_CHECKING:
    from app.chat.hub import Hub

QUOTE_CHARS = 100

# About how many bytes of messages one /message/history answer carries at most.
HISTORY_PAGE_BYTES = 512 * 1024
NO_BOUND = 2**62


async def history_page(user_id: int, cmd: int, peer_id: int, before_id: int | None,
                       around_id: int | None, limit: int,
                       max_bytes: int = HISTORY_PAGE_BYTES) -> tuple[list[dict[str, Any]], bool]:
    """One page of a conversation as wire messages, oldest first, and whether it was cut short
    by its size (so fewer rows than asked for is not the beginning).

    `around_id`: half the page up to and including that message, half after it (each half
    bounded in size as a page is; the client then pages on from either end). Otherwise the
    messages below `before_id`. A page holds at most `limit` rows and about `max_bytes` (always
    at least one row): an answer nobody reads sits in the server's memory."""
    since_ms = await access.check_read(user_id, cmd, peer_id)
    # Each answer is cut to its size as soon as it is read: the rows dropped must not stay
    # referenced while the next query (or the relations' query) is awaited.
    if around_id is not None:
        found = list(reversed(within_bytes(await message_store.conversation_page(
            user_id, cmd, peer_id, around_id + 1, limit - limit // 2, newer=False,
            since_ms=since_ms), max_bytes)))
        found += within_bytes(await message_store.conversation_page(
            user_id, cmd, peer_id, around_id, limit // 2, newer=True, since_ms=since_ms),
            max_bytes)
        return await current_state(found, since_ms), False
    rows = await message_store.conversation_page(
        user_id, cmd, peer_id, before_id or NO_BOUND, limit, newer=False, since_ms=since_ms)
    kept = within_bytes(rows, max_bytes)
    cut_short = len(kept) < len(rows)
    del rows
    return await current_state(list(reversed(kept)), since_ms), cut_short


async def current_state(rows: list[dict[str, Any]], since_ms: int,
                        may_read: Callable[[dict[str, Any]], bool] | None = None
                        ) -> list[dict[str, Any]]:
    """Stored rows as wire messages in their current state: `edited` (ms of the last edit),
    `reactions` ([{emoji, users}] in the fixed order) and a reply's `quote` (the answered
    message as it is now, when the reader may see it: in a group, sent since they joined;
    `may_read(row)` says it instead for rows of several conversations, as search's)."""
    await message_store.with_relations(rows)
    messages = [wire_message(r) for r in rows]
    edited: dict[int, int] = {}
    reacted: dict[int, dict[str, dict[int, None]]] = {}
    for change in await message_store.changes_of([r["id"] for r in rows]):
        ref, media = change["ref_id"], change["media"]
        if media == MEDIA_EDIT:
            edited[ref] = change["created_ms"]
        elif media in (MEDIA_REACT, MEDIA_UNREACT):
            users = reacted.setdefault(ref, {}).setdefault(change["content"], {})
            if media == MEDIA_REACT:
                users[change["sender_id"]] = None
            else:
                users.pop(change["sender_id"], None)
    refs = [m["ref"] for m in messages if m.get("rel") == "reply"]
    quoted = await message_store.messages_by_id(sorted(set(refs)))
    for message in messages:
        _add_state(message, edited, reacted, quoted,
                   may_read or (lambda row: int(row["created_ms"]) >= since_ms))
    return messages


def _add_state(message: dict[str, Any], edited: dict[int, int],
               reacted: dict[int, dict[str, dict[int, None]]],
               quoted: dict[int, dict[str, Any]],
               may_read: Callable[[dict[str, Any]], bool]) -> None:
    if message.get("recalled"):
        return
    if message["id"] in edited:
        message["edited"] = edited[message["id"]]
    reactions = reacted.get(message["id"])
    if reactions:
        shown = [{"emoji": e, "users": list(reactions[e])} for e in REACTIONS
                 if reactions.get(e)]
        if shown:
            message["reactions"] = shown
    original = quoted.get(message.get("ref", 0)) if message.get("rel") == "reply" else None
    if original is not None and may_read(original):
        message["quote"] = quote_of(original, QUOTE_CHARS)


async def conversations(user_id: int) -> list[dict[str, Any]]:
    """Each conversation the user has messages in: last message, unread count, read mark;
    newest first. A group counts only while the user is a member, from when they joined."""
    wanted = await message_store.last_message_ids(user_id)
    if not wanted:
        return []
    last_rows = await message_store.messages_by_id([last_id for _, _, last_id in wanted])
    unread = await message_store.unread_counts(user_id)
    marks = await message_store.read_marks_of_user(user_id)
    mutes = await message_store.mutes_of(user_id)
    mentions = await message_store.mention_counts(user_id)
    result = [{"cmd": cmd, "dstid": peer, "last": wire_message(last_rows[last_id]),
               "unread": unread.get((cmd, peer), 0), "read_id": marks.get((cmd, peer), 0),
               "muted": int((cmd, peer) in mutes),
               "mentions": mentions.get(peer, 0) if cmd == CMD_GROUP else 0}
              for cmd, peer, last_id in wanted]
    result.sort(key=lambda c: c["last"]["id"], reverse=True)
    return result


async def set_mute(hub: Hub, user_id: int, cmd: int, peer_id: int, muted: bool
                   ) -> dict[str, int]:
    """Mute or unmute a conversation the user may read, for all their devices (the others are
    told at once)."""
    await access.check_read(user_id, cmd, peer_id)
    await message_store.set_mute(user_id, cmd, peer_id, muted)
    hub.mute_changed(user_id, cmd, peer_id, muted)
    return {"cmd": cmd, "dstid": peer_id, "muted": int(muted)}


async def mutes(user_id: int) -> list[dict[str, int]]:
    return [{"cmd": cmd, "dstid": peer} for cmd, peer in sorted(
        await message_store.mutes_of(user_id))]


async def mark_read(user_id: int, cmd: int, peer_id: int, message_id: int) -> int:
    """Move the user's read mark forward (never back); answer the mark now stored. The caller
    has checked that the user may post there (the socket's rule for receipts)."""
    return await message_store.advance_read_mark(user_id, cmd, peer_id, message_id)


async def receipts(user_id: int, cmd: int, peer_id: int) -> list[dict[str, Any]]:
    """Who has read how far in one conversation the user may read (after a reload)."""
    await access.check_read(user_id, cmd, peer_id)
    return await message_store.read_marks_in(cmd, peer_id, user_id)
