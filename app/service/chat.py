"""A chat session: one authenticated WebSocket speaking the article's frames (v1) or the
extended protocol (v2). It validates every frame as hostile input, applies the rules (friends
only, members only, rate limits), hands messages to the batched writer, and after the commit
publishes them through the hub and acknowledges the sender.

Frames arrive synchronously from the connection's data path; anything that needs the database
runs in the writer task or in a short task, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import ujson

from app.chat.wire import (
    CMD_ACK,
    CMD_ERROR,
    CMD_GROUP,
    CMD_HEART,
    CMD_PRESENCE,
    CMD_READ,
    CMD_SINGLE,
    CMD_SYNC,
    CMD_SYNC_END,
    CMD_TYPING,
    SERVER_CID_PREFIX,
    encode,
    legacy_message,
)
from app.model.database import fetch_all
from app.service import access, messages
from app.service.broker import Envelope
from app.service.messages import Draft
from app.settings import ChatSettings
from app.util.errors import AppError, BadRequest, Throttled, Unavailable
from app.util.ratelimit import TokenBuckets
from app.util.security import check_local_link
from app.util.validate import check_text, whole_number
from app.websocket import WriteCoalescer, WsConnection, encode_text_frame

if TYPE_CHECKING:
    from app.service.hub import Hub
    from app.service.messages import MessageWriter

log = logging.getLogger("imchat.chat")

SYNC_PAGE = 500
SYNC_COST = 5.0
# A further page of one catch-up: one more query, paced by the socket anyway.
NEXT_PAGE_COST = 1.0
# Live frames held back during a catch-up; a socket whose catch-up lags further is closed 1013.
PENDING_LIMIT = 1000
# How often a paced catch-up looks whether the socket took its last page: soon at first, then
# less and less often (many sockets that do not read must not keep the loop busy).
DRAIN_POLL_FIRST = 0.01
DRAIN_POLL_MAX = 0.5
HEARTBEAT_FRAME = encode_text_frame(b'{"cmd":0}')
TYPING_INTERVAL = 0.5


class ChatRuntime:
    """What all sessions of this process share: the hub, the writer and the chat settings."""

    __slots__ = ("hub", "writer", "settings", "coalescer", "paused", "tasks", "buckets",
                 "history_buckets", "open_sockets")

    def __init__(self, hub: Hub, writer: MessageWriter, settings: ChatSettings,
                 coalescer: WriteCoalescer | None = None) -> None:
        self.hub = hub
        self.writer = writer
        self.settings = settings
        # Around a synchronous run of sends (a catch-up page): one write per connection.
        self.coalescer = coalescer or WriteCoalescer()
        # Sessions whose reading is paused while the writer catches up.
        self.paused: set[ChatSession] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        # One token bucket per user, shared by all of the user's connections: opening more
        # sockets does not raise anyone's rate.
        rate = settings.messages_per_second
        self.buckets = TokenBuckets(rate, 2.0 * rate, start=rate)
        per_minute = settings.history_pages_per_minute
        self.history_buckets = TokenBuckets(per_minute / 60.0, max(1.0, per_minute / 6.0))
        # Open chat sockets per user in this process (counted from on_open to on_close).
        self.open_sockets: dict[int, int] = {}

    def take_token(self, user_id: int, cost: float = 1.0) -> None:
        if not self.buckets.take(user_id, cost):
            raise Throttled("you are sending too fast; the request was refused")

    async def pay(self, user_id: int, cost: float, conn: WsConnection) -> bool:
        """Take `cost` from the user's bucket, waiting as long as it takes to fill: work the
        server does on its own account (a catch-up page) is paced, not refused. False (and
        nothing taken) once `conn` is closed: sockets opened and dropped in a loop must not
        leave waiters behind."""
        buckets = self.buckets
        cost = min(cost, buckets.burst)  # a bucket never holds more than its burst
        while not conn.closed:
            if buckets.take(user_id, cost):
                return True
            # Several catch-ups may wait on one bucket: each takes its turn when it wakes.
            await asyncio.sleep(buckets.wait_time(user_id, cost))
        return False

    def take_history_page(self, user_id: int) -> None:
        if not self.history_buckets.take(user_id):
            raise Throttled("you are loading history too fast; try again in a moment")

    def check_socket_room(self, user_id: int) -> None:
        """Refuse (429) one more chat socket beyond chat.max_connections_per_user."""
        if self.open_sockets.get(user_id, 0) >= self.settings.max_connections_per_user:
            raise Throttled("too many chat connections are open for this account; "
                            "close another tab or device first")

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def writer_progressed(self) -> None:
        if self.paused and self.writer.backlog < self.writer.high_water // 2:
            paused, self.paused = self.paused, set()
            for session in paused:
                session.conn.resume_reading()


class RecentIds:
    """The last few thousand message ids written to a v1 connection. The article's protocol
    has no ids a client could use to drop a repeat, so the server does: a catch-up (at connect,
    or after a broker gap) and a live copy of the same message can arrive in either order when
    the message was sent through another process."""

    __slots__ = ("ids", "order", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.ids: set[int] = set()
        self.order: deque[int] = deque()
        self.limit = limit

    def __contains__(self, message_id: int) -> bool:
        return message_id in self.ids

    def add(self, message_id: int) -> None:
        if message_id in self.ids:
            return
        self.ids.add(message_id)
        self.order.append(message_id)
        if len(self.order) > self.limit:
            self.ids.discard(self.order.popleft())


def _int(frame: dict[str, Any], name: str, *, default: int | None = None, low: int = 0,
         high: int = 2**63 - 1) -> int:
    return whole_number(frame.get(name, default), name, low, high)


def _text(frame: dict[str, Any], name: str, limit: int) -> str:
    value = frame.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    return check_text(value, name)


def _link(frame: dict[str, Any], name: str) -> str:
    # Pictures and voice come from this server only: no tracking pixels, no javascript: URLs.
    return check_local_link(_text(frame, name, 255), name)


class ChatSession:
    """One connection's protocol state (kept small: thousands of these live at once)."""

    __slots__ = ("runtime", "hub", "user_id", "v2", "sid", "conn", "token_hash", "expires_ms",
                 "pending", "since", "caught_up", "typing_at", "refused", "recent",
                 "start_cursor", "__weakref__")

    def __init__(self, runtime: ChatRuntime, user_id: int, v2: bool, token_hash: str,
                 expires_ms: int, since: int | None) -> None:
        self.runtime = runtime
        self.hub = runtime.hub
        self.user_id = user_id
        self.v2 = v2
        self.sid = runtime.hub.next_session_id()
        self.conn: WsConnection = None  # type: ignore[assignment]  # set by on_open
        self.token_hash = token_hash
        self.expires_ms = expires_ms
        # Live frames held back (with their message ids) while the connect-time catch-up runs.
        self.pending: list[tuple[int, bytes]] | None = []
        self.since = since
        # The last message id the catch-up sent; held-back live frames at or below it are dupes.
        self.caught_up = 0
        self.typing_at = 0.0
        self.refused = False
        # v1 only: ids already written, so no message reaches the socket twice.
        self.recent: RecentIds | None = None if v2 else RecentIds()
        # v1: the user's delivery cursor when this connection opened (older was delivered).
        self.start_cursor = 0

    # -- WsHandler --------------------------------------------------------------------------

    def on_open(self, conn: WsConnection) -> None:
        self.conn = conn
        sockets = self.runtime.open_sockets
        sockets[self.user_id] = sockets.get(self.user_id, 0) + 1
        # Read nothing until the session knows the user's groups and friends.
        conn.pause_reading()
        self.runtime.spawn(self._attach())

    def on_text(self, conn: WsConnection, text: str) -> None:
        try:
            frame = ujson.loads(text)
        except ValueError:
            self._refuse(BadRequest("the frame is not valid JSON"), None)
            return
        if not isinstance(frame, dict):
            self._refuse(BadRequest("the frame must be a JSON object"), None)
            return
        cid = frame.get("cid")
        cid = cid if isinstance(cid, str) and len(cid) <= 64 and cid.isprintable() else None
        try:
            cmd = frame.get("cmd")
            # Exactly an int: 10.0 == 10 and False == 0 in Python, and would be stored as such.
            if type(cmd) is not int:
                raise BadRequest("cmd must be a whole number")
            if cmd in (CMD_SINGLE, CMD_GROUP):
                self._message(frame, cmd)
            elif cmd == CMD_HEART:
                conn.send_frame(HEARTBEAT_FRAME)
            elif cmd == CMD_READ:
                self._read(frame)
            elif cmd == CMD_TYPING:
                self._typing(frame)
            elif cmd == CMD_SYNC:
                self._sync_request(frame)
            else:
                raise BadRequest(f"unknown cmd {str(cmd)[:20]}")
        except AppError as error:
            self._refuse(error, cid)

    def on_close(self, conn: WsConnection) -> None:
        sockets = self.runtime.open_sockets
        left = sockets.get(self.user_id, 1) - 1
        if left > 0:
            sockets[self.user_id] = left
        else:
            sockets.pop(self.user_id, None)
        self.pending = None
        self.runtime.paused.discard(self)
        self.hub.detach(self)

    # -- outgoing ---------------------------------------------------------------------------

    def push(self, frame: bytes, message_id: int) -> bool:
        """Write a live frame (from the hub), or hold it while catching up. True when it was
        written now: the hub then moves a v1 user's delivery cursor past it."""
        pending = self.pending
        if pending is not None:
            if len(pending) >= PENDING_LIMIT:
                # Its catch-up lags too far behind the live stream: it resyncs when it returns.
                self.pending = None
                self.conn.close(1013, "too slow")
                return False
            pending.append((message_id, frame))
            return False
        recent = self.recent
        if recent is not None and message_id:
            if message_id in recent:
                return False
            recent.add(message_id)
        return self.conn.send_frame(frame)

    def close(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.conn.close(code, reason)

    def _send_json(self, obj: dict[str, Any]) -> None:
        self.conn.send_frame(encode_text_frame(encode(obj)))

    def _refuse(self, error: AppError, cid: str | None) -> None:
        if self.v2:
            body: dict[str, Any] = {"cmd": CMD_ERROR, "code": -1, "reason": error.reason,
                                    "msg": error.detail}
            if cid is not None:
                body["cid"] = cid[:64]
            self._send_json(body)
        elif not self.refused:
            # The article's client has no error frame, so the refusal is logged; only the first
            # of each connection, shortened: one socket must not be able to fill the disk.
            self.refused = True
            log.info("refused a frame from user %s: %.200s (further refusals on this "
                     "connection are not logged)", self.user_id, error.detail)

    # -- connect-time catch-up --------------------------------------------------------------

    async def _attach(self) -> None:
        try:
            await self.hub.attach(self)
            if self.conn.closed:
                self.hub.detach(self)
                return
            if self.v2:
                self._send_json({"cmd": CMD_PRESENCE,
                                 "online": await self.hub.online_friends(self.user_id)})
                # A catch-up costs what a requested sync page costs, so reconnecting in a
                # loop is no way around the rate.
                if self.since is not None and await self.runtime.pay(
                        self.user_id, SYNC_COST, self.conn):
                    await self._sync_from(self.since, until_current=True)
            elif await self.runtime.pay(self.user_id, SYNC_COST, self.conn):
                await self._legacy_push()
            # Rows the catch-up sent may still be on their way to the hub: let them arrive
            # while live frames are held, so they are dropped there and not sent twice.
            await self.runtime.writer.published()
        except Exception:
            log.exception("starting the chat session of user %s failed", self.user_id)
            self.close(1011, "internal error")
            return
        finally:
            held, self.pending = self.pending, None
        self._release(held)
        if not self.conn.closed:
            self.conn.resume_reading()

    def _release(self, held: list[tuple[int, bytes]] | None) -> None:
        """Write the live frames held during a catch-up, minus what the catch-up sent (v2: up
        to its last id; v1: exactly the ids it sent, as ids from several processes may commit
        out of order)."""
        for message_id, frame in held or ():
            if ((not self.v2 or not message_id or message_id > self.caught_up)
                    and self.push(frame, message_id) and message_id and not self.v2):
                self.hub.advance_legacy_cursor(self.user_id, message_id)

    def resync(self, since: int, frame: bytes) -> None:
        """The broker may have lost messages above `since` (see Hub.resync)."""
        if self.conn is None or self.conn.closed:
            return
        if self.v2:
            self.push(frame, 0)  # the client syncs from there; it drops ids it already has
        elif self.pending is None:
            # Hold live frames from now on: the missed ones go first, in order.
            self.pending = []
            self.runtime.spawn(self._resync_legacy(since, own=True))
        else:
            self.runtime.spawn(self._resync_legacy(since, own=False))

    async def _resync_legacy(self, since: int, own: bool) -> None:
        # Live frames are held while the rows are read and sent; when a catch-up already held
        # them (own=False), it releases them when it ends (repeats are dropped by id).
        held = None
        try:
            floor = await messages.newest_missed_floor(
                self.user_id, max(since, self.start_cursor),
                self.runtime.settings.offline_push_limit)
            if self.conn.closed:
                return
            # Pages, as on connect; rows this socket already has are skipped by id.
            await self._catch_up(floor, until_current=True)
            await self.runtime.writer.published()
        except Exception:
            log.exception("catching user %s up after a broker gap failed", self.user_id)
            self.close(1011, "internal error")  # the client reconnects and is pushed from its cursor
            return
        finally:
            if own:
                held, self.pending = self.pending, None
        self._release(held)

    async def _legacy_push(self) -> None:
        # The stored cursor, read every time, and the one other processes published: another
        # process may have delivered more to this user's v1 connections.
        await self.hub.broker.read_up_to_now()
        rows = await fetch_all("SELECT legacy_delivered_id FROM im_user WHERE id = ?",
                               (self.user_id,))
        cursor = max(rows[0]["legacy_delivered_id"] if rows else 0,
                     self.hub.legacy_cursor.get(self.user_id, 0))
        self.hub.legacy_cursor[self.user_id] = cursor
        self.start_cursor = cursor
        floor = await messages.newest_missed_floor(
            self.user_id, cursor, self.runtime.settings.offline_push_limit)
        # The cursor moves page by page as pages are written (in _catch_up).
        self.caught_up, _more = await self._catch_up(floor, until_current=True)

    def _send_rows(self, rows: list[dict[str, Any]]) -> int:
        """Write the first rows of `rows` up to a page's worth of bytes (at least one row);
        how many of `rows` are done. A v1 connection skips rows it was already sent."""
        budget = self.runtime.settings.max_buffered_kb * 1024 // 2
        size = 0
        done = 0
        conn = self.conn
        recent = self.recent
        with self.runtime.coalescer:  # one write for the page, not one per message
            for row in rows:
                if size and size >= budget:
                    break
                if recent is not None:
                    if row["id"] in recent:
                        done += 1
                        continue
                    recent.add(row["id"])
                message = messages.wire_message(row)
                if not self.v2:  # the article's client gets what it can show
                    message = legacy_message(message) or message
                frame = encode_text_frame(encode(message))
                if not conn.send_frame(frame):
                    break
                size += len(frame)
                done += 1
        return 0 if conn.closed else done

    async def _drained(self) -> bool:
        """Wait until the socket has taken most of what it was sent. False when it is closed,
        or was closed here (1013) because it did not within chat.ping_timeout_seconds."""
        conn = self.conn
        settings = self.runtime.settings
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

    async def _catch_up(self, since: int, until_current: bool,
                        limit: int = SYNC_PAGE) -> tuple[int, bool]:
        """Send the messages after `since` in pages (the caller paid for the first); returns
        the last id sent and whether more are waiting.

        A page is at most `limit` rows and about half of chat.max_buffered_kb, and the next
        one goes out only once the socket has taken the last one and the user's rate allows:
        a client that does not read holds one page of the server's memory, not its backlog.
        """
        runtime = self.runtime
        first = True
        fetch = limit
        while True:
            if not first and not await runtime.pay(self.user_id, NEXT_PAGE_COST, self.conn):
                return since, True
            if not await self._drained():
                return since, True
            rows = await messages.missed_by(self.user_id, since, fetch)
            sent = self._send_rows(rows)
            if self.conn.closed:
                return since, True
            more = sent < len(rows) or len(rows) == fetch
            if sent:
                since = rows[sent - 1]["id"]
                if not self.v2:
                    # An article client has no acks: written to its socket counts as delivered.
                    self.hub.advance_legacy_cursor(self.user_id, since)
            # Rows read but not sent are read again: when a page was cut by its size, read
            # about what the next one can hold, not `limit` large messages again.
            fetch = limit if sent == len(rows) else min(limit, 2 * sent)
            del rows  # not kept while waiting for the socket: it may be megabytes
            if not (until_current and more):
                return since, more
            first = False

    async def _sync_from(self, since: int, until_current: bool, limit: int = SYNC_PAGE) -> None:
        since, more = await self._catch_up(since, until_current, limit)
        if self.conn.closed:
            return
        self.caught_up = max(self.caught_up, since)
        self._send_json({"cmd": CMD_SYNC_END, "upto": since, "more": more})

    # -- chat messages ----------------------------------------------------------------------

    def _message(self, frame: dict[str, Any], cmd: int) -> None:
        limit = self.runtime.settings.max_message_bytes
        dstid = _int(frame, "dstid", low=1)
        media = _int(frame, "media", default=1, low=1, high=99)
        content = _text(frame, "content", limit)
        url = _link(frame, "url")
        pic = _link(frame, "pic")
        memo = _text(frame, "memo", 255)
        amount = _int(frame, "amount", default=0, low=-(2**31), high=2**31 - 1)
        cid = frame.get("cid")
        if cid is None:
            cid = self.runtime.writer.new_cid()
        elif (not isinstance(cid, str) or not 1 <= len(cid) <= 64 or not cid.isprintable()
              or cid.startswith(SERVER_CID_PREFIX)):
            raise BadRequest("cid must be 1-64 printable characters and not start with ~")
        else:
            check_text(cid, "cid")
        if not (content or url):
            raise BadRequest("an empty message cannot be sent")
        self._may_post(cmd, dstid)
        self.runtime.take_token(self.user_id)
        draft = Draft(cmd, self.user_id, dstid, media, content, pic, url, memo, amount, cid,
                      int(time.time() * 1000), self._stored)
        if cmd == CMD_SINGLE and self.runtime.settings.allow_strangers:
            self.runtime.spawn(self._submit_to_existing_user(draft))
            return
        self._submit(draft)

    async def _submit_to_existing_user(self, draft: Draft) -> None:
        try:
            await access.check_stranger(self.user_id, draft.dstid)
        except AppError as refusal:
            self._refuse(refusal, draft.cid)
        else:
            self._submit(draft)

    def _submit(self, draft: Draft) -> None:
        writer = self.runtime.writer
        writer.submit(draft)
        if writer.backlog >= writer.high_water and not self.conn.closed:
            # The database is behind: stop reading from this client until it catches up.
            self.conn.pause_reading()
            self.runtime.paused.add(self)

    def _stored(self, draft: Draft, row: dict[str, Any] | None, duplicate: bool) -> None:
        """Runs in the writer task after the commit."""
        self.runtime.writer_progressed()
        client_cid = None if draft.cid.startswith(SERVER_CID_PREFIX) else draft.cid
        if row is None:
            self._refuse(Unavailable("the message could not be stored; send it again"),
                         client_cid)
            return
        message_id = row["id"]
        if not duplicate:
            message = messages.wire_message(row)
            payload = encode(message)
            legacy = legacy_message(message)
            legacy_payload = encode(legacy) if legacy is not None else b""
            if draft.cmd == CMD_SINGLE:
                envelope = Envelope(payload, user_ids=(draft.dstid, draft.sender_id),
                                    message_id=message_id, skip_session=self.sid,
                                    legacy_payload=legacy_payload)
            else:
                envelope = Envelope(payload, group_id=draft.dstid, message_id=message_id,
                                    skip_session=self.sid, legacy_payload=legacy_payload)
            self.hub.publish(envelope)
        if self.v2:
            ack: dict[str, Any] = {"cmd": CMD_ACK, "id": message_id, "ts": row["created_ms"],
                                   "tcmd": draft.cmd, "dstid": draft.dstid}
            if client_cid is not None:
                ack["cid"] = client_cid
            if duplicate:
                ack["duplicate"] = True
            if self.conn is not None and not self.conn.closed:
                self._send_json(ack)
        else:
            self.hub.advance_legacy_cursor(self.user_id, message_id)

    # -- receipts, typing, sync (v2) --------------------------------------------------------

    def _require_v2(self) -> None:
        if not self.v2:
            raise BadRequest("this frame needs a v=2 connection")

    def _may_post(self, cmd: int, dstid: int) -> None:
        hub = self.hub
        access.check_post_cached(self.user_id, cmd, dstid, self.runtime.settings.allow_strangers,
                                 hub.user_friends.get(self.user_id, ()),
                                 hub.user_groups.get(self.user_id, ()))

    def _conversation(self, frame: dict[str, Any]) -> tuple[int, int]:
        """The conversation a read receipt or typing notice is for, if the user may post there."""
        tcmd = _int(frame, "tcmd", low=CMD_SINGLE, high=CMD_GROUP)
        dstid = _int(frame, "dstid", low=1)
        self._may_post(tcmd, dstid)
        return tcmd, dstid

    def _read(self, frame: dict[str, Any]) -> None:
        self._require_v2()
        tcmd, dstid = self._conversation(frame)
        message_id = _int(frame, "id", low=1)
        self.runtime.take_token(self.user_id)
        self.runtime.spawn(self._store_read(tcmd, dstid, message_id))

    async def _store_read(self, tcmd: int, dstid: int, message_id: int) -> None:
        try:
            mark = await messages.mark_read(self.user_id, tcmd, dstid, message_id)
        except Exception:
            log.exception("storing a read mark failed")
            self._refuse(Unavailable("the read mark could not be stored"), None)
            return
        payload = encode({"cmd": CMD_READ, "userid": self.user_id, "tcmd": tcmd,
                          "dstid": dstid, "id": mark})
        if tcmd == CMD_SINGLE:
            envelope = Envelope(payload, user_ids=(dstid, self.user_id), v2_only=True,
                                skip_session=self.sid)
        else:
            envelope = Envelope(payload, group_id=dstid, v2_only=True, skip_session=self.sid)
        self.hub.publish(envelope)

    def _typing(self, frame: dict[str, Any]) -> None:
        self._require_v2()
        tcmd, dstid = self._conversation(frame)
        now = time.monotonic()
        if now - self.typing_at < TYPING_INTERVAL:
            return  # typing notices are advisory: extra ones are dropped silently
        self.typing_at = now
        payload = encode({"cmd": CMD_TYPING, "userid": self.user_id, "tcmd": tcmd,
                          "dstid": dstid})
        if tcmd == CMD_SINGLE:
            self.hub.publish(Envelope(payload, user_ids=(dstid,), v2_only=True))
        else:
            self.hub.publish(Envelope(payload, group_id=dstid, v2_only=True,
                                      skip_session=self.sid))

    def _sync_request(self, frame: dict[str, Any]) -> None:
        self._require_v2()
        since = _int(frame, "since", default=0, low=0)
        limit = _int(frame, "limit", default=SYNC_PAGE, low=1, high=SYNC_PAGE)
        # A sync page costs a query of up to 500 rows: it weighs as much as five messages.
        self.runtime.take_token(self.user_id, SYNC_COST)
        self.runtime.spawn(self._sync_from(since, until_current=False, limit=limit))
