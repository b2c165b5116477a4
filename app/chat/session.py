"""ChatSession: one authenticated chat socket's state (who, which protocol, what is held back
while it catches up, what a v1 socket was already sent) and how frames go out to it: live
frames from the hub (`push`), replies, and refusals as error frames. The commands that act on
it are app/chat/commands.py's; reading frames is app/chat/handler.py's."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from app.chat.runtime import ChatRuntime
from app.chat.wire import CMD_ERROR, encode
from app.util.errors import AppError, BadRequest
from app.websocket import WsConnection, encode_text_frame

log = logging.getLogger("imchat.chat")

# Live frames held back during a catch-up; a socket whose catch-up lags further is closed 1013.
PENDING_LIMIT = 1000


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


class ChatSession:
    """One connection's protocol state (kept small: thousands of these live at once)."""

    __slots__ = ("runtime", "hub", "user_id", "v2", "sid", "conn", "token_hash", "expires_ms",
                 "pending", "since", "caught_up", "typing_at", "refused", "recent",
                 "start_cursor", "checking", "__weakref__")

    def __init__(self, runtime: ChatRuntime, user_id: int, v2: bool, token_hash: str,
                 expires_ms: int, since: int | None, stored_cursor: int = 0) -> None:
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
        # v1: the user's delivery cursor when this connection opened (older was delivered);
        # the stored one, read with the sign-in, until the catch-up settles it.
        self.start_cursor = stored_cursor
        # The last message of this connection still being checked against the database (a
        # reply, mentions, a stranger, a linked upload); later ones wait for it, in order.
        self.checking: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """The client's address (its port left out), as the audit log names it."""
        peer = self.conn.peer if self.conn is not None else ""
        return peer.rpartition(":")[0] or peer

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

    @property
    def is_open(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def send_json(self, obj: dict[str, Any]) -> None:
        self.conn.send_frame(encode_text_frame(encode(obj)))

    def refuse(self, error: AppError, cid: str | None) -> None:
        """Tell a v2 client why a frame was refused (an error frame with the typed error's
        reason); log the first refusal of a v1 connection, whose protocol has no error frame."""
        if self.v2:
            body: dict[str, Any] = {"cmd": CMD_ERROR, "code": -1, "reason": error.reason,
                                    "msg": error.detail}
            if cid is not None:
                body["cid"] = cid[:64]
            self.send_json(body)
        elif not self.refused:
            # Only the first of each connection, shortened: one socket must not be able to
            # fill the disk.
            self.refused = True
            log.info("refused a frame from user %s: %.200s (further refusals on this "
                     "connection are not logged)", self.user_id, error.detail)

    def release(self, held: list[tuple[int, bytes]] | None) -> None:
        """Write the live frames held during a catch-up, minus what the catch-up sent (v2: up
        to its last id; v1: exactly the ids it sent, as ids from several processes may commit
        out of order)."""
        for message_id, frame in held or ():
            if ((not self.v2 or not message_id or message_id > self.caught_up)
                    and self.push(frame, message_id) and message_id and not self.v2):
                self.hub.advance_legacy_cursor(self.user_id, message_id)

    def require_v2(self) -> None:
        if not self.v2:
            raise BadRequest("this frame needs a v=2 connection")
