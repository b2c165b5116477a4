"""The group governance frame of the chat socket (v2): `{"cmd": 114, "action": ..., "id":
<group>, ...}` does what the matching /group/* route does, through the same service functions
(app/service/group_admin.py), so the rules, the notices and the hub are the same. The frame is
read and checked here (as hostile input); the change runs as a task, and the socket gets
`{"cmd": 114, "action", "id", "ok": 1}` (with the frame's `cid`) once it is stored, or an error
frame with the refusal's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.chat.session import ChatSession
from app.chat.wire import CMD_GROUP_ACTION, frame_cid, frame_int, frame_link, frame_text
from app.model.tables import User
from app.service import group_admin
from app.service.context import ServiceContext
from app.util.errors import AppError, BadRequest, Unavailable

log = logging.getLogger("imchat.chat")

class Change(Protocol):
    """What an action does, given the services, the acting user, the group and the client's
    address (for the audit log)."""

    def __call__(self, ctx: ServiceContext, user: User, group_id: int, *, address: str
                 ) -> Awaitable[Any]: ...

MAX_NAME = 40
MAX_MEMO = 140


def _on_member(frame: dict[str, Any], action: Callable[..., Awaitable[Any]]) -> Change:
    dstid = frame_int(frame, "dstid", low=1)
    return lambda ctx, user, group_id, address: action(ctx, user, group_id, dstid,
                                                       address=address)


def _admin(frame: dict[str, Any]) -> Change:
    dstid = frame_int(frame, "dstid", low=1)
    admin = frame_int(frame, "admin", default=1, low=0, high=1) == 1
    return lambda ctx, user, group_id, address: group_admin.set_admin(
        ctx, user, group_id, dstid, admin, address=address)


def _update(frame: dict[str, Any]) -> Change:
    fields: dict[str, Any] = {}
    if "name" in frame:
        fields["name"] = frame_text(frame, "name", MAX_NAME).strip()
    if "memo" in frame:
        fields["memo"] = frame_text(frame, "memo", MAX_MEMO).strip()
    if "icon" in frame:
        fields["icon"] = frame_link(frame, "icon")
    if "private" in frame:
        fields["private"] = frame_int(frame, "private", low=0, high=1) == 1
    return lambda ctx, user, group_id, address: group_admin.update_group(
        ctx, user, group_id, address=address, **fields)


# Each action's frame reader: checks the frame's other fields now, answers the change to run.
READERS: dict[str, Callable[[dict[str, Any]], Change]] = {
    "invite": lambda frame: _on_member(frame, group_admin.invite),
    "remove": lambda frame: _on_member(frame, group_admin.remove_member),
    "transfer": lambda frame: _on_member(frame, group_admin.transfer),
    "admin": _admin,
    "update": _update,
    "leave": lambda _frame: group_admin.leave,
    "dissolve": lambda _frame: group_admin.dissolve,
}


def do_group_action(session: ChatSession, frame: dict[str, Any]) -> None:
    session.require_v2()
    action = frame.get("action")
    if not isinstance(action, str) or action not in READERS:
        raise BadRequest(f"action must be one of {', '.join(sorted(READERS))}")
    group_id = frame_int(frame, "id", low=1)
    cid = frame_cid(frame)
    change = READERS[action](frame)
    session.runtime.take_token(session.user_id)
    session.runtime.spawn(_run(session, action, group_id, cid, change))


async def _run(session: ChatSession, action: str, group_id: int, cid: str | None,
               change: Change) -> None:
    services = session.runtime.services
    try:
        user = await User.get_or_none(id=session.user_id)
        if services is None or user is None:
            raise Unavailable("group changes are not available here")
        await change(services, user, group_id, address=session.address)
    except AppError as refusal:
        session.refuse(refusal, cid)
        return
    except Exception:
        log.exception("a group %s by user %s failed", action, session.user_id)
        session.refuse(Unavailable("the change could not be made; try again"), cid)
        return
    if session.is_open:
        answer: dict[str, Any] = {"cmd": CMD_GROUP_ACTION, "action": action, "id": group_id,
                                  "ok": 1}
        if cid is not None:
            answer["cid"] = cid
        session.send_json(answer)
