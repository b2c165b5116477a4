"""The chat protocol's vocabulary, the one source: every frame `cmd`, message `media` kind and
application close code, how a stored message looks on the wire, and how a client frame's fields
are read (as hostile input: exact types, bounded sizes, clean text). The web client's
asset/js/protocol.js is checked against this module (tests/test_client_protocol.py); the
whole protocol is written out in docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

import ujson

from app.util.errors import BadRequest
from app.util.security import check_local_link
from app.util.validate import check_text, whole_number

# Frames of the article's protocol (v1 and v2).
CMD_HEART = 0  # keep-alive, both ways
CMD_SINGLE = 10  # a one-to-one message
CMD_GROUP = 11  # a group message
# Extension frames: only connections that asked for them (`v=2`) get these.
CMD_ACK = 100  # server -> sender: stored as `id` (by `cid`)
CMD_ERROR = 101  # server -> client: a frame was refused (`reason`, `msg`, `cid`)
CMD_READ = 102  # both ways: read up to `id` in a conversation (`tcmd`, `dstid`)
CMD_TYPING = 103  # both ways: typing in a conversation
CMD_PRESENCE = 104  # server -> client: who is online (snapshot) or one user's change
CMD_SYNC = 106  # client -> server: what I missed after `since`
CMD_SYNC_END = 107  # server -> client: caught up to `upto`, `more` to follow
CMD_RESYNC = 108  # server -> client: messages above `since` may have been missed: sync again
CMD_CONTACTS = 109  # server -> client: your friends, friend requests or blocks changed (`what`)
CMD_GROUP_ACTION = 114  # both ways: govern a group (`action`, `id`, ...); answered `ok`

MEDIA_TEXT = 1
MEDIA_VOICE = 3
MEDIA_PICTURE = 4
MEDIA_FILE = 6  # any file: `url`, `content` its name, `amount` its size in bytes, `memo` its type
# Server-made (clients may send 1..99 only): a change to a group, stored and delivered like a
# message. `memo` is the event, then `:` and the new value where there is one (a name, a
# notice); `amount` the user it concerns (0: none); `url` a new icon; `content` a readable line.
MEDIA_NOTICE = 120
# The events of MEDIA_NOTICE.
GROUP_EVENTS = ("joined", "added", "left", "removed", "renamed", "icon", "notice", "private",
                "public", "admin", "unadmin", "owner", "dissolved")

CLOSE_SESSION_ENDED = 4001  # logged out, disabled or expired: do not reconnect

# A `cid` the server made for a message that came without one; clients may not use the prefix.
SERVER_CID_PREFIX = "~"


def wire_message(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the article's message JSON, plus `ts` and the client's `cid`."""
    message = {
        "id": row["id"],
        "userid": row["sender_id"],
        "cmd": row["cmd"],
        "dstid": row["dst_user_id"] if row["cmd"] == CMD_SINGLE else row["community_id"],
        "media": row["media"],
        "content": row["content"],
        "pic": row["pic"],
        "url": row["url"],
        "memo": row["memo"],
        "amount": row["amount"],
        "ts": row["created_ms"],
    }
    cid = row.get("cid")
    if cid and not cid.startswith(SERVER_CID_PREFIX):
        message["cid"] = cid
    return message


def legacy_message(message: dict[str, Any]) -> dict[str, Any] | None:
    """What the article's (v1) client is sent in place of a message it cannot show: a text
    line (a file: its name, size and link; a group notice: its readable line). None when it
    can show the message as it is."""
    media = message["media"]
    if media == MEDIA_NOTICE:
        return {**message, "media": MEDIA_TEXT, "url": "", "pic": "", "memo": "", "amount": 0}
    if media != MEDIA_FILE:
        return None
    text = f"[file] {message['content']} ({readable_size(message['amount'])}) {message['url']}"
    return {**message, "media": MEDIA_TEXT, "content": text, "url": "", "pic": ""}


def readable_size(size: int) -> str:
    if size < 1024:
        return f"{max(size, 0)} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def wire_size(row: dict[str, Any]) -> int:
    """About how many bytes a stored row takes on the wire (its texts plus the JSON around)."""
    return 160 + sum(len(row[name] or "") for name in ("content", "pic", "url", "memo", "cid"))


def encode(message: dict[str, Any]) -> bytes:
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


def frame_int(frame: dict[str, Any], name: str, *, default: int | None = None, low: int = 0,
              high: int = 2**63 - 1) -> int:
    """A whole-number field within [low, high] (a float, a bool or text is refused)."""
    return whole_number(frame.get(name, default), name, low, high)


def frame_text(frame: dict[str, Any], name: str, limit: int) -> str:
    """A text field of at most `limit` characters, "" when absent."""
    value = frame.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    return check_text(value, name)


def frame_link(frame: dict[str, Any], name: str) -> str:
    """A link field: pictures and voice come from this server only (no tracking pixels, no
    javascript: URLs)."""
    return check_local_link(frame_text(frame, name, 255), name)


def frame_cid(frame: dict[str, Any]) -> str | None:
    """The client's own message id, or None when the frame has none."""
    cid = frame.get("cid")
    if cid is None:
        return None
    if (not isinstance(cid, str) or not 1 <= len(cid) <= 64 or not cid.isprintable()
            or cid.startswith(SERVER_CID_PREFIX)):
        raise BadRequest("cid must be 1-64 printable characters and not start with ~")
    return check_text(cid, "cid")
