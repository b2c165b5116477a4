"""The audit log: who did what, from where, and whether it worked (table im_audit).

Every feature that changes something an administrator may have to answer for calls ONE
function, after its change is committed:

    await audit.record(audit.USER_DISABLE, actor=admin_user, target=f"user {user.id}",
                       address=client_ip)

`actor` is the acting user (None for the system or the command line; `actor_name` then says
who, e.g. the mobile someone typed at a failed sign-in). `action` is one of the names below
(add a constant for a new one, so the console's filter lists it). Entries are never changed.

Reading (`search`, `csv_chunks`) is for the admin console; filters use the table's indexes.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

from app.model.tables import AuditEntry, User

log = logging.getLogger("imchat.audit")

# Accounts and sign-in.
SIGN_IN = "sign_in"
PASSWORD_CHANGE = "password.change"
# An administrator's actions on accounts (from the console, or the command line).
USER_CREATE = "user.create"
USER_DISABLE = "user.disable"
USER_ENABLE = "user.enable"
USER_RESET_PASSWORD = "user.reset_password"
USER_SIGN_OUT = "user.sign_out"
ADMIN_GRANT = "admin.grant"
ADMIN_REVOKE = "admin.revoke"
SETTINGS_CHANGE = "settings.change"
EXPORT = "export"
# Groups: ownership and membership changes, by members (HTTP or the chat socket) or by an
# administrator from the console (app/service/group_notices.py's after_change records them).
GROUP_CREATE = "group.create"
GROUP_TRANSFER = "group.transfer"
GROUP_DISSOLVE = "group.dissolve"
GROUP_JOIN = "group.join"
GROUP_ADD = "group.add"
GROUP_LEAVE = "group.leave"
GROUP_REMOVE = "group.remove"
GROUP_ADMIN_GRANT = "group.admin_grant"
GROUP_ADMIN_REVOKE = "group.admin_revoke"
# A message recalled by someone other than its sender (an admin or a group owner).
MESSAGE_RECALL = "message.recall"
# Background jobs.
RETENTION = "retention"
DIRECTORY_SYNC = "directory.sync"

ACTIONS = (SIGN_IN, PASSWORD_CHANGE, USER_CREATE, USER_DISABLE, USER_ENABLE,
           USER_RESET_PASSWORD, USER_SIGN_OUT, ADMIN_GRANT, ADMIN_REVOKE, SETTINGS_CHANGE, EXPORT,
           GROUP_CREATE, GROUP_TRANSFER, GROUP_DISSOLVE, GROUP_JOIN, GROUP_ADD, GROUP_LEAVE,
           GROUP_REMOVE, GROUP_ADMIN_GRANT, GROUP_ADMIN_REVOKE, MESSAGE_RECALL, RETENTION,
           DIRECTORY_SYNC)

MAX_PAGE = 500
CSV_COLUMNS = ("id", "time_ms", "action", "actor_id", "actor", "target", "address", "success",
               "detail")


async def record(action: str, *, actor: User | None = None, actor_name: str = "",
                 target: str = "", address: str = "", success: bool = True,
                 detail: str = "") -> None:
    """Store one entry. Text is cut to the column sizes (a failed sign-in's name is whatever
    the client sent)."""
    await AuditEntry.create(
        action=action[:40],
        actor_id=actor.id if actor is not None else None,
        actor=(actor.mobile if actor is not None else actor_name)[:40],
        target=target[:100],
        address=address[:64],
        success=success,
        detail=detail[:500],
    )


async def record_quietly(action: str, **fields: Any) -> None:
    """`record` for a path that is already failing (a refused sign-in): a database problem
    here is logged, and the caller's own refusal is what the client sees."""
    try:
        await record(action, **fields)
    except Exception as error:
        log.warning("could not record %s in the audit log: %s", action, error)


def public_entry(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "time_ms": entry.created_ms, "action": entry.action,
            "actor_id": entry.actor_id, "actor": entry.actor, "target": entry.target,
            "address": entry.address, "success": bool(entry.success), "detail": entry.detail}


async def search(*, action: str = "", actor_id: int | None = None, text: str = "",
                 since_ms: int | None = None, until_ms: int | None = None,
                 success: bool | None = None, before_id: int | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    """Entries newest first matching every filter given; `before_id` pages back. `text`
    matches the actor's name, the target or the address."""
    query = AuditEntry.all()
    if action:
        query = query.filter(action=action)
    if actor_id is not None:
        query = query.filter(actor_id=actor_id)
    if since_ms is not None:
        query = query.filter(created_ms__gte=since_ms)
    if until_ms is not None:
        query = query.filter(created_ms__lt=until_ms)
    if success is not None:
        query = query.filter(success=success)
    if before_id is not None:
        query = query.filter(id__lt=before_id)
    if text:
        from tortoise.expressions import Q

        query = query.filter(Q(actor__icontains=text) | Q(target__icontains=text)
                             | Q(address__icontains=text))
    entries = await query.order_by("-id").limit(max(1, min(limit, MAX_PAGE)))
    return [public_entry(entry) for entry in entries]


async def csv_chunks(**filters: Any) -> AsyncIterator[str]:
    """Every matching entry as CSV, header first, a page at a time (newest first): the whole
    log is never held in memory."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    before_id = None
    while True:
        page = await search(**filters, before_id=before_id, limit=MAX_PAGE)
        for entry in page:
            writer.writerow([_cell(entry[column]) for column in CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(page) < MAX_PAGE:
            return
        before_id = page[-1]["id"]


def _cell(value: Any) -> Any:
    """A spreadsheet runs text starting with = + - @ as a formula: a user-chosen name or a
    failed sign-in's text must not (CSV injection)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
