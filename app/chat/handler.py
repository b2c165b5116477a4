"""The chat socket's handler: what the WebSocket transport calls (open, each text frame, close)
and what the hub calls on a broker gap. A frame is parsed as hostile JSON, dispatched to its
command (app/chat/commands.py), and a refusal becomes an error frame.

Frames arrive synchronously from the connection's data path; anything that needs the database
runs in the writer task or in a short task, never blocking the loop.
"""

from __future__ import annotations

from typing import Any

import ujson

from app.chat import catchup
from app.chat.commands import COMMANDS
from app.chat.session import ChatSession
from app.util.errors import AppError, BadRequest
from app.websocket import WsConnection


class ChatHandler(ChatSession):
    """A ChatSession driven by its socket (app.websocket's WsHandler) and by the hub."""

    __slots__ = ()

    def on_open(self, conn: WsConnection) -> None:
        self.conn = conn
        self.runtime.socket_opened(self.user_id)
        # Read nothing until the session knows the user's groups and friends.
        conn.pause_reading()
        self.runtime.spawn(catchup.attach(self))

    def on_text(self, conn: WsConnection, text: str) -> None:
        try:
            frame = ujson.loads(text)
        except ValueError:
            self.refuse(BadRequest("the frame is not valid JSON"), None)
            return
        if not isinstance(frame, dict):
            self.refuse(BadRequest("the frame must be a JSON object"), None)
            return
        try:
            cmd = frame.get("cmd")
            # Exactly an int: 10.0 == 10 and False == 0 in Python, and would be stored as such.
            if type(cmd) is not int:
                raise BadRequest("cmd must be a whole number")
            command = COMMANDS.get(cmd)
            if command is None:
                raise BadRequest(f"unknown cmd {str(cmd)[:20]}")
            command(self, frame)
        except AppError as error:
            self.refuse(error, _echoed_cid(frame))

    def on_close(self, conn: WsConnection) -> None:
        self.runtime.socket_closed(self.user_id, conn)
        self.pending = None
        self.hub.detach(self)

    def resync(self, since: int, frame: bytes) -> None:
        """The broker may have lost messages above `since` (see Hub.resync)."""
        if self.conn is None or self.conn.closed:
            return
        if self.v2:
            self.push(frame, 0)  # the client syncs from there; it drops ids it already has
        elif self.pending is None:
            # Hold live frames from now on: the missed ones go first, in order.
            self.pending = []
            self.runtime.spawn(catchup.resync_legacy(self, since, own=True))
        else:
            self.runtime.spawn(catchup.resync_legacy(self, since, own=False))


def _echoed_cid(frame: dict[str, Any]) -> str | None:
    """The frame's cid, echoed in its error frame when it is one a client could have sent."""
    cid = frame.get("cid")
    return cid if isinstance(cid, str) and len(cid) <= 64 and cid.isprintable() else None
