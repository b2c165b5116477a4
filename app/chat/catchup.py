"""Catching a session up on what it missed, in pages paced by the socket and the user's rate:
at connect (v2 from `since`, v1 from the user's delivery cursor), on a v2 `sync` request, and
after the broker may have lost messages. Live frames are held (ChatSession.pending) while a
catch-up runs and released after it, minus what it sent."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.chat.session import ChatSession
from app.chat.wire import (
    CMD_PRESENCE,
    CMD_SYNC_END,
    encode,
    legacy_message,
    wire_message,
    within_bytes,
)
from app.model import message_store
from app.websocket import encode_text_frame

log = logging.getLogger("imchat.chat")

SYNC_PAGE = 500
SYNC_COST = 5.0
# A further page of one catch-up: one more query, paced by the socket anyway.
NEXT_PAGE_COST = 1.0
# How often a paced catch-up looks whether the socket took its last page: soon at first, then
# less and less often (many sockets that do not read must not keep the loop busy).
DRAIN_POLL_FIRST = 0.01
DRAIN_POLL_MAX = 0.5


async def attach(session: ChatSession) -> None:
    """Register a new session with the hub, send what it missed, then let its live frames and
    its reading go."""
    runtime, hub = session.runtime, session.hub
    try:
        await hub.attach(session)
        if session.conn.closed:
            hub.detach(session)
            return
        if session.v2:
            session.send_json({"cmd": CMD_PRESENCE,
                               "online": await hub.online_friends(session.user_id)})
            # A catch-up costs what a requested sync page costs, so reconnecting in a loop is
            # no way around the rate.
            if session.since is not None and await runtime.pay(
                    session.user_id, SYNC_COST, session.conn):
                if await runtime.missed.load((session.user_id, session.since)):
                    await sync_from(session, session.since, until_current=True)
                else:  # nothing to page through
                    _sync_end(session, session.since, more=False)
        elif await runtime.pay(session.user_id, SYNC_COST, session.conn):
            await _legacy_push(session)
        # Rows the catch-up sent may still be on their way to the hub: let them arrive while
        # live frames are held, so they are dropped there and not sent twice.
        await runtime.writer.published()
    except Exception:
        log.exception("starting the chat session of user %s failed", session.user_id)
        session.close(1011, "internal error")
        return
    finally:
        held, session.pending = session.pending, None
    session.release(held)
    if not session.conn.closed:
        session.conn.resume_reading()


async def _legacy_push(session: ChatSession) -> None:
    # start_cursor holds the stored cursor, read with the sign-in at the handshake.
    cursor = await session.hub.load_legacy_cursor(session.user_id, session.start_cursor)
    session.start_cursor = cursor
    if not await session.runtime.missed.load((session.user_id, cursor)):
        session.caught_up = cursor  # nothing missed (the usual case after a restart)
        return
    floor = await message_store.newest_missed_floor(
        session.user_id, cursor, session.runtime.settings.offline_push_limit)
    if floor is None:  # nothing missed: no page to read
        session.caught_up = cursor
        return
    # The cursor moves page by page as pages are written (in catch_up).
    session.caught_up, _more = await catch_up(session, floor, until_current=True)


async def resync_legacy(session: ChatSession, since: int, own: bool) -> None:
    """A v1 session after a broker gap: send what it missed above `since`. Live frames are
    held while the rows are read and sent; when a catch-up already held them (own=False), it
    releases them when it ends (repeats are dropped by id)."""
    held = None
    try:
        floor = await message_store.newest_missed_floor(
            session.user_id, max(since, session.start_cursor),
            session.runtime.settings.offline_push_limit)
        if session.conn.closed:
            return
        if floor is not None:
            # Pages, as on connect; rows this socket already has are skipped by id.
            await catch_up(session, floor, until_current=True)
        await session.runtime.writer.published()
    except Exception:
        log.exception("catching user %s up after a broker gap failed", session.user_id)
        session.close(1011, "internal error")  # the client reconnects and is pushed from its cursor
        return
    finally:
        if own:
            held, session.pending = session.pending, None
    session.release(held)


def _send_rows(session: ChatSession, rows: list[dict[str, Any]]) -> int:
    """Write the first rows of `rows` up to a page's worth of bytes (at least one row); how
    many of `rows` are done. A v1 connection skips rows it was already sent."""
    budget = session.runtime.settings.max_buffered_kb * 1024 // 2
    size = 0
    done = 0
    conn = session.conn
    recent = session.recent
    with session.runtime.coalescer:  # one write for the page, not one per message
        for row in rows:
            if size and size >= budget:
                break
            if recent is not None:
                if row["id"] in recent:
                    done += 1
                    continue
                recent.add(row["id"])
            message = wire_message(row)
            if not session.v2:  # the article's client gets what it can show
                message = legacy_message(message) or message
            frame = encode_text_frame(encode(message))
            if not conn.send_frame(frame):
                break
            size += len(frame)
            done += 1
    return 0 if conn.closed else done


async def _drained(session: ChatSession) -> bool:
    """Wait until the socket has taken most of what it was sent. False when it is closed, or
    was closed here (1013) because it did not within chat.ping_timeout_seconds."""
    conn = session.conn
    settings = session.runtime.settings
    low = settings.max_buffered_kb * 1024 // 4
    deadline = time.monotonic() + settings.ping_timeout_seconds
    poll = DRAIN_POLL_FIRST
    while not conn.closed and conn.buffered_bytes > low:
        if time.monotonic() > deadline:
            conn.close(1013, "too slow")
            break
        await asyncio.sleep(poll)
        poll = min(2 * poll, DRAIN_POLL_MAX)
    return not conn.closed


async def catch_up(session: ChatSession, since: int, until_current: bool,
                   limit: int = SYNC_PAGE) -> tuple[int, bool]:
    """Send the messages after `since` in pages (the caller paid for the first); returns the
    last id sent and whether more are waiting.

    A page is at most `limit` rows and about half of chat.max_buffered_kb, and the next one
    goes out only once the socket has taken the last one and the user's rate allows: a client
    that does not read holds one page of the server's memory, not its backlog.
    """
    runtime, conn = session.runtime, session.conn
    page_bytes = runtime.settings.max_buffered_kb * 1024 // 2
    first = True
    fetch = limit
    while True:
        if not first and not await runtime.pay(session.user_id, NEXT_PAGE_COST, conn):
            return since, True
        if not await _drained(session):
            return since, True
        rows = await message_store.missed_by(session.user_id, since, fetch)
        fetched = len(rows)
        # What replies and changes refer to, for the rows that fit the page only: the others
        # are not held while that is read.
        rows = within_bytes(rows, page_bytes)
        await message_store.with_relations(rows)
        sent = _send_rows(session, rows)
        if conn.closed:
            return since, True
        more = sent < fetched or fetched == fetch
        if sent:
            since = rows[sent - 1]["id"]
            if not session.v2:
                # An article client has no acks: written to its socket counts as delivered.
                session.hub.advance_legacy_cursor(session.user_id, since)
        # Rows read but not sent are read again: when a page was cut by its size, read about
        # what the next one can hold, not `limit` large messages again.
        fetch = limit if sent == fetched else min(limit, 2 * sent)
        del rows  # not kept while waiting for the socket: it may be megabytes
        if not (until_current and more):
            return since, more
        first = False


async def sync_from(session: ChatSession, since: int, until_current: bool,
                    limit: int = SYNC_PAGE) -> None:
    """A v2 catch-up from `since`, closed by a sync-end frame (`upto`, `more`)."""
    since, more = await catch_up(session, since, until_current, limit)
    _sync_end(session, since, more)


def _sync_end(session: ChatSession, upto: int, more: bool) -> None:
    if session.conn.closed:
        return
    session.caught_up = max(session.caught_up, upto)
    session.send_json({"cmd": CMD_SYNC_END, "upto": upto, "more": more})
