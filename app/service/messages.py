"""Reading chat over HTTP: one conversation's history (paged, or around a message), the
conversation list with unread counts, and read receipts. Each asks the access rule first, then
the message store (app/model/message_store.py); sending is the chat socket's (app/chat/).
"""

from __future__ import annotations

from typing import Any

from app.chat.wire import wire_message, wire_size
from app.model import message_store
from app.service import access

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
    if around_id is not None:
        older = await message_store.conversation_page(
            user_id, cmd, peer_id, around_id + 1, limit - limit // 2, newer=False,
            since_ms=since_ms)
        newer = await message_store.conversation_page(
            user_id, cmd, peer_id, around_id, limit // 2, newer=True, since_ms=since_ms)
        found = list(reversed(_within_bytes(older, max_bytes))) + _within_bytes(newer, max_bytes)
        return [wire_message(r) for r in found], False
    rows = await message_store.conversation_page(
        user_id, cmd, peer_id, before_id or NO_BOUND, limit, newer=False, since_ms=since_ms)
    kept = _within_bytes(rows, max_bytes)
    return [wire_message(r) for r in reversed(kept)], len(kept) < len(rows)


def _within_bytes(rows: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The leading rows that fit in about `max_bytes` (at least one)."""
    size = 0
    for kept, row in enumerate(rows):
        size += wire_size(row)
        if size > max_bytes and kept:
            return rows[:kept]
    return rows


async def conversations(user_id: int) -> list[dict[str, Any]]:
    """Each conversation the user has messages in: last message, unread count, read mark;
    newest first. A group counts only while the user is a member, from when they joined."""
    wanted = await message_store.last_message_ids(user_id)
    if not wanted:
        return []
    last_rows = await message_store.messages_by_id([last_id for _, _, last_id in wanted])
    unread = await message_store.unread_counts(user_id)
    marks = await message_store.read_marks_of_user(user_id)
    result = [{"cmd": cmd, "dstid": peer, "last": wire_message(last_rows[last_id]),
               "unread": unread.get((cmd, peer), 0), "read_id": marks.get((cmd, peer), 0)}
              for cmd, peer, last_id in wanted]
    result.sort(key=lambda c: c["last"]["id"], reverse=True)
    return result


async def mark_read(user_id: int, cmd: int, peer_id: int, message_id: int) -> int:
    """Move the user's read mark forward (never back); answer the mark now stored. The caller
    has checked that the user may post there (the socket's rule for receipts)."""
    return await message_store.advance_read_mark(user_id, cmd, peer_id, message_id)


async def receipts(user_id: int, cmd: int, peer_id: int) -> list[dict[str, Any]]:
    """Who has read how far in one conversation the user may read (after a reload)."""
    await access.check_read(user_id, cmd, peer_id)
    return await message_store.read_marks_in(cmd, peer_id, user_id)
