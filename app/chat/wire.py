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
CMD_RECALL = 110  # client -> server: recall message `ref`
CMD_EDIT = 111  # client -> server: message `ref` now reads `content`
CMD_REACT = 112  # client -> server: my reaction `emoji` on message `ref` is on (1) or off (0)
CMD_MUTE = 113  # server -> client: this user (un)muted a conversation on another device
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
# Kinds clients may send are 1..MAX_CLIENT_MEDIA; the server's own start above it.
MAX_CLIENT_MEDIA = 99
# The stored state of a message that was recalled (its content is gone).
MEDIA_RECALLED = 100
# Entries of the log that change an earlier message (`ref_id`); never unread, never "last".
MEDIA_EDIT = 101
MEDIA_RECALL = 102
MEDIA_REACT = 103
MEDIA_UNREACT = 104
# Changes are the range FIRST..LAST_CHANGE_MEDIA (a group notice, 120, is a message).
FIRST_CHANGE_MEDIA = MEDIA_EDIT
LAST_CHANGE_MEDIA = MEDIA_UNREACT
REL_OF_MEDIA = {MEDIA_EDIT: "edit", MEDIA_RECALL: "recall", MEDIA_REACT: "react",
                MEDIA_UNREACT: "unreact"}
REL_REPLY = "reply"
# The reactions a message can get (a small fixed set, as in DingTalk).
REACTIONS = ("👍", "❤️", "😂", "😮", "😢", "🙏")
MAX_MENTIONS = 20
# What the article's (v1) client shows for each change: it reads `content` only.
RECALLED_TEXT = "[recalled a message]"
_NOTICES = {MEDIA_EDIT: "[edited] {}", MEDIA_RECALL: RECALLED_TEXT,
            MEDIA_REACT: "[reacted {}]", MEDIA_UNREACT: "[removed reaction {}]"}
MENTION_ALL = "all"

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
    if row["media"] >= MEDIA_RECALLED or row.get("ref_id") or row.get("mentions"):
        _relations(row, message)
    return message


def _relations(row: dict[str, Any], message: dict[str, Any]) -> None:
    """A reply's, a change entry's or a recalled message's extra fields (rare: kept off the
    path of plain messages). Every kind is shown to the article's client as text."""
    media = row["media"]
    ref = row.get("ref_id")
    if media == MEDIA_RECALLED:
        # Nothing of it is left: not what it answered, nor whom it named.
        message.update(media=MEDIA_TEXT, content=RECALLED_TEXT, pic="", url="", memo="",
                       recalled=1)
        return
    if media in _NOTICES:
        message.update(media=MEDIA_TEXT, content=_NOTICES[media].format(row["content"]),
                       rel=REL_OF_MEDIA[media])
        if media != MEDIA_RECALL:
            message["text"] = row["content"]
    elif ref:
        message["rel"] = REL_REPLY
    if ref:
        message["ref"] = ref
    mentions = row.get("mentions")
    if mentions:
        named = mentions.strip(",").split(",")
        if MENTION_ALL in named:
            message["atall"] = 1
        message["at"] = [int(n) for n in named if n.isdigit()]


def quote_of(row: dict[str, Any], chars: int = 100) -> dict[str, Any]:
    """What a reply shows of the message it answers (as that message is now)."""
    shown = wire_message(row)
    quote = {"id": shown["id"], "userid": shown["userid"], "media": shown["media"],
             "content": shown["content"][:chars]}
    if shown.get("recalled"):
        quote["recalled"] = 1
    return quote


def stored_mentions(user_ids: list[int], everyone: bool) -> str:
    """How mentions are stored (",5,9," or ",all,"): one LIKE finds a user's."""
    names = ([MENTION_ALL] if everyone else []) + [str(u) for u in user_ids]
    return f",{','.join(names)}," if names else ""


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


def within_bytes(rows: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The leading rows that fit in about `max_bytes` on the wire (at least one)."""
    size = 0
    for kept, row in enumerate(rows):
        size += wire_size(row)
        if size > max_bytes and kept:
            return rows[:kept]
    return rows


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


def frame_mentions(frame: dict[str, Any]) -> tuple[list[int], bool]:
    """Whom a message mentions: `at` (user ids, at most MAX_MENTIONS) and `atall` (0/1)."""
    named = frame.get("at")
    if named is None:
        named = []
    if not isinstance(named, list) or len(named) > MAX_MENTIONS:
        raise BadRequest(f"at must be a list of at most {MAX_MENTIONS} user ids")
    ids = list(dict.fromkeys(whole_number(n, "at", 1, 2**63 - 1) for n in named))
    return ids, frame_int(frame, "atall", default=0, low=0, high=1) == 1


def frame_cid(frame: dict[str, Any]) -> str | None:
    """The client's own message id, or None when the frame has none."""
    cid = frame.get("cid")
    if cid is None:
        return None
    if (not isinstance(cid, str) or not 1 <= len(cid) <= 64 or not cid.isprintable()
            or cid.startswith(SERVER_CID_PREFIX)):
        raise BadRequest("cid must be 1-64 printable characters and not start with ~")
    return check_text(cid, "cid")
