"""One function per client command of the chat socket, in the manner of Zulip's actions: a
`check_*` reads and validates the frame (as hostile input) and applies the rules (access, rate),
raising a typed AppError that the handler turns into an error frame; a `do_*` does it, and
publishes through the hub only once the change is stored.

COMMANDS maps each frame `cmd` to its function; app/chat/handler.py dispatches with it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from app.chat import catchup
from app.chat.broker import Envelope
from app.chat.group_commands import do_group_action
from app.chat.session import ChatSession
from app.chat.wire import (
    CMD_ACK,
    CMD_GROUP,
    CMD_GROUP_ACTION,
    CMD_HEART,
    CMD_READ,
    CMD_SINGLE,
    CMD_SYNC,
    CMD_TYPING,
    SERVER_CID_PREFIX,
    encode,
    frame_cid,
    frame_int,
    frame_link,
    frame_text,
    legacy_message,
    wire_message,
)
from app.model.message_writer import Draft
from app.service import access, messages
from app.util.errors import AppError, BadRequest, Unavailable
from app.websocket import encode_text_frame

log = logging.getLogger("imchat.chat")

HEARTBEAT_FRAME = encode_text_frame(b'{"cmd":0}')
TYPING_INTERVAL = 0.5
# A sync page costs a query of up to 500 rows: it weighs as much as five messages.
SYNC_COST = catchup.SYNC_COST


def check_may_post(session: ChatSession, cmd: int, dstid: int) -> None:
    """The access rule for posting, against the hub's in-memory friends and groups."""
    hub = session.hub
    access.check_post_cached(session.user_id, cmd, dstid,
                             session.runtime.settings.allow_strangers,
                             hub.user_friends.get(session.user_id, ()),
                             hub.user_groups.get(session.user_id, ()))


def check_conversation(session: ChatSession, frame: dict[str, Any]) -> tuple[int, int]:
    """The conversation a receipt or typing notice is for, if the user may post there."""
    tcmd = frame_int(frame, "tcmd", low=CMD_SINGLE, high=CMD_GROUP)
    dstid = frame_int(frame, "dstid", low=1)
    check_may_post(session, tcmd, dstid)
    return tcmd, dstid


# -- messages -------------------------------------------------------------------------------

def check_message(session: ChatSession, frame: dict[str, Any], cmd: int) -> Draft:
    """A one-to-one or group message frame, validated, allowed and paid for, as a draft."""
    limit = session.runtime.settings.max_message_bytes
    dstid = frame_int(frame, "dstid", low=1)
    media = frame_int(frame, "media", default=1, low=1, high=99)
    content = frame_text(frame, "content", limit)
    url = frame_link(frame, "url")
    pic = frame_link(frame, "pic")
    memo = frame_text(frame, "memo", 255)
    amount = frame_int(frame, "amount", default=0, low=-(2**31), high=2**31 - 1)
    cid = frame_cid(frame) or session.runtime.writer.new_cid()
    if not (content or url):
        raise BadRequest("an empty message cannot be sent")
    check_may_post(session, cmd, dstid)
    session.runtime.take_token(session.user_id)
    return Draft(cmd, session.user_id, dstid, media, content, pic, url, memo, amount, cid,
                 int(time.time() * 1000), functools.partial(message_stored, session))


def do_send_message(session: ChatSession, frame: dict[str, Any]) -> None:
    cmd = frame["cmd"]  # CMD_SINGLE or CMD_GROUP: what COMMANDS dispatched on
    draft = check_message(session, frame, cmd)
    if cmd == CMD_SINGLE and session.runtime.settings.allow_strangers:
        # Anyone may be messaged: the recipient must at least exist and be enabled.
        session.runtime.spawn(_submit_to_existing_user(session, draft))
        return
    _submit(session, draft)


async def _submit_to_existing_user(session: ChatSession, draft: Draft) -> None:
    try:  # the recipient exists, is enabled and has not blocked the sender
        await access.check_stranger(session.user_id, draft.dstid)
    except AppError as refusal:
        session.refuse(refusal, draft.cid)
    else:
        _submit(session, draft)


def _submit(session: ChatSession, draft: Draft) -> None:
    session.runtime.writer.submit(draft)
    session.runtime.pause_while_behind(session.conn)


def message_stored(session: ChatSession, draft: Draft, row: dict[str, Any] | None,
                   duplicate: bool) -> None:
    """After the commit (in the writer task): publish the message, acknowledge the sender."""
    session.runtime.writer_progressed()
    client_cid = None if draft.cid.startswith(SERVER_CID_PREFIX) else draft.cid
    if row is None:
        session.refuse(Unavailable("the message could not be stored; send it again"),
                       client_cid)
        return
    message_id = row["id"]
    if not duplicate:
        message = wire_message(row)
        legacy = legacy_message(message)  # what an article client is sent instead, if anything
        session.hub.publish(_conversation_envelope(
            session, draft.cmd, draft.dstid, encode(message), message_id=message_id,
            legacy_payload=encode(legacy) if legacy is not None else b""))
    if not session.v2:
        session.hub.advance_legacy_cursor(session.user_id, message_id)
        return
    ack: dict[str, Any] = {"cmd": CMD_ACK, "id": message_id, "ts": row["created_ms"],
                           "tcmd": draft.cmd, "dstid": draft.dstid}
    if client_cid is not None:
        ack["cid"] = client_cid
    if duplicate:
        ack["duplicate"] = True
    if session.is_open:
        session.send_json(ack)


def _conversation_envelope(session: ChatSession, cmd: int, dstid: int, payload: bytes,
                           message_id: int = 0, v2_only: bool = False,
                           legacy_payload: bytes = b"") -> Envelope:
    """To everyone in the conversation (the sender's other devices too), not this socket."""
    if cmd == CMD_SINGLE:
        return Envelope(payload, user_ids=(dstid, session.user_id), message_id=message_id,
                        v2_only=v2_only, skip_session=session.sid,
                        legacy_payload=legacy_payload)
    return Envelope(payload, group_id=dstid, message_id=message_id, v2_only=v2_only,
                    skip_session=session.sid, legacy_payload=legacy_payload)


# -- receipts, typing, sync, heartbeat (receipts, typing and sync need v2) ------------------

def do_read(session: ChatSession, frame: dict[str, Any]) -> None:
    session.require_v2()
    tcmd, dstid = check_conversation(session, frame)
    message_id = frame_int(frame, "id", low=1)
    session.runtime.take_token(session.user_id)
    session.runtime.spawn(_store_read(session, tcmd, dstid, message_id))


async def _store_read(session: ChatSession, tcmd: int, dstid: int, message_id: int) -> None:
    try:
        mark = await messages.mark_read(session.user_id, tcmd, dstid, message_id)
    except Exception:
        log.exception("storing a read mark failed")
        session.refuse(Unavailable("the read mark could not be stored"), None)
        return
    payload = encode({"cmd": CMD_READ, "userid": session.user_id, "tcmd": tcmd,
                      "dstid": dstid, "id": mark})
    session.hub.publish(_conversation_envelope(session, tcmd, dstid, payload, v2_only=True))


def do_typing(session: ChatSession, frame: dict[str, Any]) -> None:
    session.require_v2()
    tcmd, dstid = check_conversation(session, frame)
    now = time.monotonic()
    if now - session.typing_at < TYPING_INTERVAL:
        return  # typing notices are advisory: extra ones are dropped silently
    session.typing_at = now
    payload = encode({"cmd": CMD_TYPING, "userid": session.user_id, "tcmd": tcmd,
                      "dstid": dstid})
    if tcmd == CMD_SINGLE:
        # To the peer only: the typist's own devices need not see themselves typing.
        session.hub.publish(Envelope(payload, user_ids=(dstid,), v2_only=True))
    else:
        session.hub.publish(_conversation_envelope(session, tcmd, dstid, payload, v2_only=True))


def do_sync(session: ChatSession, frame: dict[str, Any]) -> None:
    session.require_v2()
    since = frame_int(frame, "since", default=0, low=0)
    limit = frame_int(frame, "limit", default=catchup.SYNC_PAGE, low=1, high=catchup.SYNC_PAGE)
    session.runtime.take_token(session.user_id, SYNC_COST)
    session.runtime.spawn(catchup.sync_from(session, since, until_current=False, limit=limit))


def do_heartbeat(session: ChatSession, _frame: dict[str, Any]) -> None:
    session.conn.send_frame(HEARTBEAT_FRAME)


COMMANDS: dict[int, Callable[[ChatSession, dict[str, Any]], None]] = {
    CMD_HEART: do_heartbeat,
    CMD_SINGLE: do_send_message,
    CMD_GROUP: do_send_message,
    CMD_READ: do_read,
    CMD_TYPING: do_typing,
    CMD_SYNC: do_sync,
    CMD_GROUP_ACTION: do_group_action,
}
