"""One function per client command of the chat socket, in the manner of Zulip's actions: a
`check_*` reads and validates the frame (as hostile input) and applies the rules (access, rate),
raising a typed AppError that the handler turns into an error frame; a `do_*` does it, and
publishes through the hub only once the change is stored.

COMMANDS maps each frame `cmd` to its function; app/chat/handler.py dispatches with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from app.chat import catchup
from app.chat.broker import Envelope
from app.chat.group_commands import do_group_action
from app.chat.session import ChatSession
from app.chat.wire import (
    CMD_ACK,
    CMD_EDIT,
    CMD_GROUP,
    CMD_GROUP_ACTION,
    CMD_HEART,
    CMD_REACT,
    CMD_READ,
    CMD_RECALL,
    CMD_SINGLE,
    CMD_SYNC,
    CMD_TYPING,
    MAX_CLIENT_MEDIA,
    MEDIA_EDIT,
    MEDIA_REACT,
    MEDIA_RECALL,
    MEDIA_RECALLED,
    MEDIA_TEXT,
    MEDIA_UNREACT,
    REACTIONS,
    SERVER_CID_PREFIX,
    encode,
    frame_cid,
    frame_int,
    frame_link,
    frame_mentions,
    frame_text,
    legacy_message,
    quote_of,
    stored_mentions,
    wire_message,
)
from app.model import message_store
from app.model.message_writer import Draft
from app.model.tables import User
from app.service import access, audit, file_access, messages
from app.util.errors import AppError, BadRequest, Forbidden, TooLate, Unavailable
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
    media = frame_int(frame, "media", default=1, low=1, high=MAX_CLIENT_MEDIA)
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
    strangers = cmd == CMD_SINGLE and session.runtime.settings.allow_strangers
    if (strangers or "ref" in frame or "at" in frame or "atall" in frame
            or file_access.links_uploads(draft.url, draft.pic)):
        # Rules that need the database: off the data path, in a task of their own.
        ref = frame_int(frame, "ref", default=0, low=0)
        named, everyone = frame_mentions(frame)
        if (named or everyone) and cmd != CMD_GROUP:
            raise BadRequest("mentions are for group messages")
        _in_order(session, _submit_checked(session, draft, ref, named, everyone, strangers))
    elif session.checking is not None:
        _in_order(session, _submit_later(session, draft))
    else:
        _submit(session, draft)


def _in_order(session: ChatSession, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` once the connection's earlier messages that wait for a database check are
    submitted: a message is never stored ahead of one its sender sent before it."""
    before = session.checking

    async def after_those() -> None:
        try:
            if before is not None:
                await asyncio.wait({before})
            await work
        finally:
            work.close()  # cancelled before it started: no "never awaited" warning
            if session.checking is task:
                session.checking = None

    task = session.runtime.spawn(after_those())
    session.checking = task


async def _submit_later(session: ChatSession, draft: Draft) -> None:
    _submit(session, draft)


async def _submit_checked(session: ChatSession, draft: Draft, ref: int, named: list[int],
                          everyone: bool, strangers: bool) -> None:
    try:
        if strangers:
            # The recipient exists, is enabled and has not blocked the sender.
            await access.check_stranger(session.user_id, draft.dstid)
        # Uploads are linked only by those who may download them.
        await file_access.check_links(session.user_id, "the message", draft.url, draft.pic)
        if ref:
            await check_reply(session, draft, ref)
        if named or everyone:
            draft.mentions = await check_mentions(session, draft.dstid, named, everyone)
    except AppError as error:
        session.refuse(error, _client_cid(draft.cid))
        return
    _submit(session, draft)


async def check_reply(session: ChatSession, draft: Draft, ref: int) -> None:
    """A reply answers a message of its own conversation that the sender may read."""
    row = await message_store.message_by_id(ref)
    if await access.check_read_message(session.user_id, row) != (draft.cmd, draft.dstid):
        raise access.NotFound(access.NO_SUCH_MESSAGE)
    _check_is_message(row)
    draft.ref_id = ref
    # The live frame carries the answered message as it is now (history does too).
    draft.done = functools.partial(message_stored, session, quote=quote_of(row))


async def check_mentions(session: ChatSession, group_id: int, named: list[int],
                         everyone: bool) -> str:
    """Whom a group message mentions, as stored: members only; everyone only by the owner and admins."""
    if everyone and not await access.may_mention_all(session.user_id, group_id):
        raise Forbidden("only the group's owner and admins can mention everyone")
    return stored_mentions(await access.members_among(group_id, named), everyone)


def _submit(session: ChatSession, draft: Draft) -> None:
    session.runtime.writer.submit(draft)
    session.runtime.pause_while_behind(session.conn)


def _client_cid(cid: str) -> str | None:
    return None if cid.startswith(SERVER_CID_PREFIX) else cid


def message_stored(session: ChatSession, draft: Draft, row: dict[str, Any] | None,
                   duplicate: bool, quote: dict[str, Any] | None = None) -> None:
    """After the commit (in the writer task): publish the message, acknowledge the sender."""
    session.runtime.writer_progressed()
    client_cid = _client_cid(draft.cid)
    if row is None:
        session.refuse(Unavailable("the message could not be stored; send it again"),
                       client_cid)
        return
    message_id = row["id"]
    if not duplicate:
        message = wire_message(row)
        if quote is not None:
            message["quote"] = quote
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


# -- changes to a message: recall, edit, react (entries of the log, stored as messages) -------

def _check_is_message(row: dict[str, Any]) -> None:
    if row["media"] == MEDIA_RECALLED:
        raise BadRequest("that message was recalled")
    if row["media"] > MEDIA_RECALLED:
        raise BadRequest("that is a change to a message, not a message")


def _check_window(row: dict[str, Any], minutes: int, what: str) -> None:
    if time.time() * 1000 - row["created_ms"] > minutes * 60_000:
        raise TooLate(f"a message can only be {what} within {minutes} minutes of sending")


async def check_recall(session: ChatSession, row: dict[str, Any], _frame: dict[str, Any]
                       ) -> str:
    """The sender within chat.recall_minutes, or the group's owner at any time."""
    minutes = session.runtime.settings.recall_minutes
    if minutes == 0:
        raise Forbidden("recalling messages is turned off on this server")
    _check_is_message(row)
    if row["cmd"] == CMD_GROUP and await access.is_group_owner(session.user_id,
                                                               row["community_id"]):
        return ""
    if row["sender_id"] != session.user_id:
        raise Forbidden("only the sender (or the group's owner) can recall a message")
    _check_window(row, minutes, "recalled")
    return ""


async def check_edit(session: ChatSession, row: dict[str, Any], frame: dict[str, Any]) -> str:
    """The sender, a text message, within chat.edit_minutes; answers the new text."""
    settings = session.runtime.settings
    content = frame_text(frame, "content", settings.max_message_bytes)
    if not content:
        raise BadRequest("an edit needs the new text (to remove a message, recall it)")
    if settings.edit_minutes == 0:
        raise Forbidden("editing messages is turned off on this server")
    _check_is_message(row)
    if row["sender_id"] != session.user_id:
        raise Forbidden("only the sender can edit a message")
    if row["media"] != MEDIA_TEXT:
        raise BadRequest("only text messages can be edited")
    _check_window(row, settings.edit_minutes, "edited")
    return content


async def check_react(session: ChatSession, row: dict[str, Any], frame: dict[str, Any]) -> str:
    """One of the fixed reactions on a message that is not recalled; answers the emoji."""
    _check_is_message(row)
    return frame["emoji"]


async def _store_change(session: ChatSession, frame: dict[str, Any], media: int,
                        rule: Callable[..., Any]) -> None:
    """Read the message `ref`, apply the access rule and the change's own rule, and store the
    change as an entry of the log (acknowledged and delivered like a message)."""
    ref = frame["ref"]
    cid = frame["cid"]
    done = functools.partial(message_stored, session)
    try:
        stored = (None if cid.startswith(SERVER_CID_PREFIX)
                  else await message_store.message_by_cid(cid, session.user_id))
        if stored is None:
            row = await message_store.message_by_id(ref)
            cmd, peer = await access.check_read_message(session.user_id, row)
            check_may_post(session, cmd, peer)
            content = await rule(session, row, frame)
            if media == MEDIA_RECALL and row["sender_id"] != session.user_id:
                done = functools.partial(_recalled_for_another, session, row)
        else:
            # A resend of a stored change skips the rules (it may have made them false, as a
            # recall does): the writer answers it as a duplicate.
            cmd, peer = await access.check_read_message(session.user_id, stored)
            content = ""
    except AppError as error:
        session.refuse(error, _client_cid(cid))
        return
    _submit(session, Draft(cmd, session.user_id, peer, media, content, "", "", "", 0, cid,
                           int(time.time() * 1000), done, ref_id=ref))


def _recalled_for_another(session: ChatSession, recalled: dict[str, Any], draft: Draft,
                          row: dict[str, Any] | None, duplicate: bool) -> None:
    """`message_stored` for a recall of someone else's message (a group owner's), which the
    audit log records once it is stored."""
    message_stored(session, draft, row, duplicate)
    if row is not None and not duplicate:
        session.runtime.spawn(_audit_recall(session.user_id, session.address, recalled))


async def _audit_recall(user_id: int, address: str, recalled: dict[str, Any]) -> None:
    """The entry names the message and its sender, never its (now removed) content."""
    where = (f"group {recalled['community_id']}" if recalled["cmd"] == CMD_GROUP
             else f"user {recalled['dst_user_id']}")
    await audit.record_quietly(
        audit.MESSAGE_RECALL, actor=await User.get_or_none(id=user_id),
        actor_name=f"user {user_id}", target=f"message {recalled['id']} in {where}",
        address=address, detail=f"sent by user {recalled['sender_id']}")


def _change_frame(session: ChatSession, frame: dict[str, Any]) -> dict[str, Any]:
    """The fields every change frame has (validated), paid for: `ref`, `cid`."""
    session.require_v2()
    ref = frame_int(frame, "ref", low=1)
    cid = frame_cid(frame) or session.runtime.writer.new_cid()
    session.runtime.take_token(session.user_id)
    return {**frame, "ref": ref, "cid": cid}


def do_recall(session: ChatSession, frame: dict[str, Any]) -> None:
    change = _change_frame(session, frame)
    session.runtime.spawn(_store_change(session, change, MEDIA_RECALL, check_recall))


def do_edit(session: ChatSession, frame: dict[str, Any]) -> None:
    change = _change_frame(session, frame)
    session.runtime.spawn(_store_change(session, change, MEDIA_EDIT, check_edit))


def do_react(session: ChatSession, frame: dict[str, Any]) -> None:
    emoji = frame.get("emoji")
    if emoji not in REACTIONS:
        raise BadRequest(f"a reaction is one of {' '.join(REACTIONS)}")
    on = frame_int(frame, "on", default=1, low=0, high=1)
    change = _change_frame(session, frame)
    session.runtime.spawn(_store_change(session, change, MEDIA_REACT if on else MEDIA_UNREACT,
                                        check_react))


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
    CMD_RECALL: do_recall,
    CMD_EDIT: do_edit,
    CMD_REACT: do_react,
    CMD_GROUP_ACTION: do_group_action,
}
