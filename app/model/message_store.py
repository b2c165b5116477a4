"""The stored messages, read back: what a user missed (the catch-up), one conversation's pages,
the last message and unread count of every conversation, read marks, and the v1 delivery
cursor. Only queries live here; who may ask for what is app/service/access.py's, and the writes
of new messages are app/model/message_writer.py's.

Rows are dicts with the `im_message` columns (`ROW_KEYS`), which app/chat/wire.py turns into
frames.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tortoise.exceptions import IntegrityError

from app.chat.wire import (
    CMD_GROUP,
    CMD_SINGLE,
    FIRST_CHANGE_MEDIA,
    LAST_CHANGE_MEDIA,
    MENTION_ALL,
)
from app.model.database import fetch_all
from app.model.tables import Mute, ReadMark, User, now_ms

COLUMNS = ("cmd", "sender_id", "dst_user_id", "community_id", "cid", "media", "content", "pic",
           "url", "memo", "amount", "created_ms")
SELECT = "id, " + ", ".join(COLUMNS)
ROW_KEYS = ("id", *COLUMNS)
# Entries that change an earlier message (edit, recall, react) are not messages of their own:
# never unread, never a conversation's last, not a page's row. Group notices are messages.
_A_CHANGE = f"BETWEEN {FIRST_CHANGE_MEDIA} AND {LAST_CHANGE_MEDIA}"
_NOT_A_CHANGE = f"NOT {_A_CHANGE}"

# A user's messages after an id: sent to them, sent by them one to one (for their other
# devices), and their groups' since they joined; each branch walks one index.
_MISSED_SQL = f"""
    SELECT {{columns}} FROM (
        SELECT {SELECT} FROM im_message WHERE dst_user_id = ? AND id > ?
        UNION ALL
        SELECT {SELECT} FROM im_message WHERE sender_id = ? AND cmd = {CMD_SINGLE} AND id > ?
        UNION ALL
        SELECT m.id, {", ".join("m." + c for c in COLUMNS)}
          FROM im_membership s JOIN im_message m
            ON m.community_id = s.community_id AND m.id > ?
         WHERE s.user_id = ? AND m.created_ms >= s.created_ms
    ) AS missed ORDER BY id {{order}} LIMIT {{limit}}"""

# Unread messages of every conversation of a user, counted in one query: those after the
# user's read mark (none: all), from the peer in one-to-one, from others since joining in groups.
_UNREAD_SQL = f"""
    SELECT {CMD_SINGLE} AS cmd, m.sender_id AS peer, COUNT(*) AS n
      FROM im_message m
      LEFT JOIN im_readmark r ON r.user_id = m.dst_user_id AND r.cmd = {CMD_SINGLE}
                             AND r.peer_id = m.sender_id
     WHERE m.dst_user_id = ? AND m.id > COALESCE(r.last_read_id, 0)
       AND m.media {_NOT_A_CHANGE}
     GROUP BY m.sender_id
    UNION ALL
    SELECT {CMD_GROUP} AS cmd, m.community_id AS peer, COUNT(*) AS n
      FROM im_membership s
      JOIN im_message m ON m.community_id = s.community_id AND m.created_ms >= s.created_ms
      LEFT JOIN im_readmark r ON r.user_id = ? AND r.cmd = {CMD_GROUP}
                             AND r.peer_id = s.community_id
     WHERE s.user_id = ? AND m.sender_id <> ? AND m.id > COALESCE(r.last_read_id, 0)
       AND m.media {_NOT_A_CHANGE}
     GROUP BY m.community_id"""

# Unread group messages that mention a user (by id, or everyone), per group.
_MENTIONS_SQL = f"""
    SELECT m.community_id AS peer, COUNT(*) AS n
      FROM im_membership s
      JOIN im_message m ON m.community_id = s.community_id AND m.created_ms >= s.created_ms
      JOIN im_message_relation x ON x.message_id = m.id
      LEFT JOIN im_readmark r ON r.user_id = s.user_id AND r.cmd = {CMD_GROUP}
                             AND r.peer_id = s.community_id
     WHERE s.user_id = ? AND m.sender_id <> ? AND m.id > COALESCE(r.last_read_id, 0)
       AND m.media {_NOT_A_CHANGE} AND (x.mentions LIKE ? OR x.mentions LIKE ?)
     GROUP BY m.community_id"""

# The newest message id of each conversation a user has messages in (changes to messages are
# not messages).
_LAST_DIRECT_SQL = f"""
    SELECT peer, MAX(id) AS last_id FROM (
        SELECT dst_user_id AS peer, id FROM im_message
         WHERE sender_id = ? AND cmd = {CMD_SINGLE} AND media {_NOT_A_CHANGE}
        UNION ALL
        SELECT sender_id AS peer, id FROM im_message
         WHERE dst_user_id = ? AND media {_NOT_A_CHANGE}
    ) AS pairs GROUP BY peer"""
_LAST_GROUP_SQL = f"""
    SELECT m.community_id AS peer, MAX(m.id) AS last_id
      FROM im_membership s JOIN im_message m ON m.community_id = s.community_id
     WHERE s.user_id = ? AND m.created_ms >= s.created_ms AND m.media {_NOT_A_CHANGE}
     GROUP BY m.community_id"""


async def newest_message_id() -> int:
    rows = await fetch_all("SELECT MAX(id) AS top FROM im_message")
    return int(rows[0]["top"] or 0) if rows else 0


# Which of many (user, id) pairs have anything after the id, in one statement: the three
# branches of _MISSED_SQL as EXISTS probes, each one index lookup per pair.
_ANY_MISSED_SQL = f"""
    SELECT u.uid, u.since FROM ({{pairs}}) AS u
     WHERE EXISTS (SELECT 1 FROM im_message m WHERE m.dst_user_id = u.uid AND m.id > u.since)
        OR EXISTS (SELECT 1 FROM im_message m
                    WHERE m.sender_id = u.uid AND m.cmd = {CMD_SINGLE} AND m.id > u.since)
        OR EXISTS (SELECT 1 FROM im_membership s JOIN im_message m
                     ON m.community_id = s.community_id AND m.id > u.since
                    WHERE s.user_id = u.uid AND m.created_ms >= s.created_ms)"""


async def pairs_with_missed(pairs: list[tuple[int, int]]) -> dict[tuple[int, int], bool]:
    """Of (user id, since id) pairs, those with a message `missed_by` would return (True);
    the others have nothing to catch up. One query for all (a reconnect storm's probes)."""
    if not pairs:
        return {}
    rows = " UNION ALL ".join(["SELECT ? AS uid, ? AS since"] + ["SELECT ?, ?"] * (len(pairs) - 1))
    found = await fetch_all(_ANY_MISSED_SQL.format(pairs=rows),
                            tuple(value for pair in pairs for value in pair))
    return {(int(row["uid"]), int(row["since"])): True for row in found}


async def _missed(user_id: int, since_id: int, limit: int, newest: bool,
                  columns: str = SELECT) -> list[dict[str, Any]]:
    sql = _MISSED_SQL.format(columns=columns, order="DESC" if newest else "ASC", limit=int(limit))
    return await fetch_all(sql, (user_id, since_id, user_id, since_id, since_id, user_id))


async def missed_by(user_id: int, since_id: int, limit: int) -> list[dict[str, Any]]:
    """Messages of the user's conversations after `since_id`, oldest first (without their
    relations: the caller adds them, with `with_relations`, to the rows it keeps)."""
    return await _missed(user_id, since_id, limit, newest=False)


async def newest_missed_floor(user_id: int, since_id: int, limit: int) -> int | None:
    """Where a catch-up limited to the newest `limit` missed messages starts: None when none
    are waiting (no catch-up needed), `since_id` when no more than `limit` are, else the id
    just below the newest `limit` (ids only are read, so a backlog of large messages is not
    loaded to be thrown away)."""
    rows = await _missed(user_id, since_id, limit + 1, newest=True, columns="id")
    if not rows:
        return None
    if len(rows) <= limit:
        return since_id
    return int(rows[-1]["id"])


async def conversation_page(user_id: int, cmd: int, peer_id: int, bound: int, limit: int,
                            newer: bool, since_ms: int = 0) -> list[dict[str, Any]]:
    """Up to `limit` messages (not the entries that change them) of one conversation on one
    side of the id `bound`, nearest first: older ones newest first, or (`newer`) newer ones
    oldest first. A group's messages start at `since_ms` (when the reader joined). Without
    their relations (see `with_relations`)."""
    side, order = (">", "ASC") if newer else ("<", "DESC")
    if cmd == CMD_GROUP:
        return await fetch_all(
            f"SELECT {SELECT} FROM im_message WHERE community_id = ? AND id {side} ? "
            f"AND created_ms >= ? AND media {_NOT_A_CHANGE} "
            f"ORDER BY id {order} LIMIT {int(limit)}",
            (peer_id, bound, since_ms))
    return await fetch_all(
        f"""SELECT {SELECT} FROM (
            SELECT {SELECT} FROM im_message WHERE dst_user_id = ? AND sender_id = ? AND id {side} ?
               AND media {_NOT_A_CHANGE}
            UNION ALL
            SELECT {SELECT} FROM im_message WHERE dst_user_id = ? AND sender_id = ? AND id {side} ?
               AND media {_NOT_A_CHANGE}
        ) AS conversation ORDER BY id {order} LIMIT {int(limit)}""",
        (peer_id, user_id, bound, user_id, peer_id, bound))


async def last_message_ids(user_id: int) -> list[tuple[int, int, int]]:
    """(cmd, peer, newest message id) of every conversation the user has messages in."""
    direct = await fetch_all(_LAST_DIRECT_SQL, (user_id, user_id))
    groups = await fetch_all(_LAST_GROUP_SQL, (user_id,))
    return ([(CMD_SINGLE, r["peer"], r["last_id"]) for r in direct]
            + [(CMD_GROUP, r["peer"], r["last_id"]) for r in groups])


async def messages_by_id(ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = await with_relations(await fetch_all(
        f"SELECT {SELECT} FROM im_message WHERE id IN ({', '.join('?' * len(ids))})", ids))
    return {row["id"]: row for row in rows}


async def with_relations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `ref_id` and `mentions` to rows read from im_message (one query for the page).
    Callers trim a page to its size first: the rows they drop are not held during the query."""
    if not rows:
        return rows
    ids = [row["id"] for row in rows]
    found = {r["message_id"]: r for r in await fetch_all(
        "SELECT message_id, ref_id, mentions FROM im_message_relation "
        f"WHERE message_id IN ({', '.join('?' * len(ids))})", ids)}
    for row in rows:
        relation = found.get(row["id"])
        if relation is not None:
            row["ref_id"] = relation["ref_id"]
            row["mentions"] = relation["mentions"]
    return rows


async def changes_of(message_ids: list[int]) -> list[dict[str, Any]]:
    """The change entries (edits, recalls, reactions) that refer to these messages, oldest
    first: `ref_id`, `sender_id`, `media`, `content`, `created_ms`."""
    if not message_ids:
        return []
    return await fetch_all(
        "SELECT x.ref_id, m.id, m.sender_id, m.media, m.content, m.created_ms "
        "FROM im_message_relation x JOIN im_message m ON m.id = x.message_id "
        f"WHERE x.ref_id IN ({', '.join('?' * len(message_ids))}) "
        f"AND m.media {_A_CHANGE} ORDER BY m.id", message_ids)


async def message_by_id(message_id: int) -> dict[str, Any] | None:
    rows = await fetch_all(f"SELECT {SELECT} FROM im_message WHERE id = ?", (message_id,))
    return (await with_relations(rows))[0] if rows else None


async def message_by_cid(cid: str, sender_id: int) -> dict[str, Any] | None:
    rows = await fetch_all(f"SELECT {SELECT} FROM im_message WHERE cid = ? AND sender_id = ?",
                           (cid, sender_id))
    return rows[0] if rows else None


async def mention_counts(user_id: int) -> dict[int, int]:
    """Unread group messages that mention the user, per group."""
    return {int(r["peer"]): int(r["n"]) for r in await fetch_all(
        _MENTIONS_SQL, (user_id, user_id, f"%,{int(user_id)},%", f"%,{MENTION_ALL},%"))}


async def mutes_of(user_id: int) -> set[tuple[int, int]]:
    return {(m.cmd, m.peer_id) for m in await Mute.filter(user_id=user_id)}


async def set_mute(user_id: int, cmd: int, peer_id: int, muted: bool) -> None:
    if not muted:
        await Mute.filter(user_id=user_id, cmd=cmd, peer_id=peer_id).delete()
        return
    with contextlib.suppress(IntegrityError):  # muted at the same moment on another device
        await Mute.get_or_create(user_id=user_id, cmd=cmd, peer_id=peer_id)


async def unread_counts(user_id: int) -> dict[tuple[int, int], int]:
    """Unread messages per (cmd, peer) of all the user's conversations, in one query."""
    return {(r["cmd"], r["peer"]): int(r["n"])
            for r in await fetch_all(_UNREAD_SQL, (user_id, user_id, user_id, user_id))}


async def read_marks_of_user(user_id: int) -> dict[tuple[int, int], int]:
    return {(r.cmd, r.peer_id): r.last_read_id for r in await ReadMark.filter(user_id=user_id)}


async def advance_read_mark(user_id: int, cmd: int, peer_id: int, message_id: int) -> int:
    """Move the user's read mark forward (never back); answer the mark now stored."""
    try:
        mark, created = await ReadMark.get_or_create(
            user_id=user_id, cmd=cmd, peer_id=peer_id,
            defaults={"last_read_id": message_id, "updated_ms": now_ms()})
    except IntegrityError:  # created concurrently by another device of the same user
        mark, created = await ReadMark.get(user_id=user_id, cmd=cmd, peer_id=peer_id), False
    if created:
        return message_id
    if message_id > mark.last_read_id:
        await ReadMark.filter(id=mark.id, last_read_id__lt=message_id).update(
            last_read_id=message_id, updated_ms=now_ms())
        return message_id
    return mark.last_read_id


async def read_marks_in(cmd: int, peer_id: int, user_id: int) -> list[dict[str, Any]]:
    """Who has read how far in one conversation seen from `user_id`'s side."""
    if cmd == CMD_GROUP:
        marks = await ReadMark.filter(cmd=CMD_GROUP, peer_id=peer_id)
    else:
        marks = await ReadMark.filter(cmd=CMD_SINGLE, peer_id=user_id, user_id=peer_id)
    return [{"userid": m.user_id, "id": m.last_read_id} for m in marks]


async def legacy_cursor(user_id: int) -> int:
    """The id up to which the user's v1 (article) connections were sent their messages."""
    rows = await fetch_all("SELECT legacy_delivered_id FROM im_user WHERE id = ?", (user_id,))
    return int(rows[0]["legacy_delivered_id"]) if rows else 0


async def store_legacy_cursor(user_id: int, cursor: int) -> None:
    """Move the stored v1 cursor forward to `cursor` (never back)."""
    await User.filter(id=user_id, legacy_delivered_id__lt=cursor).update(
        legacy_delivered_id=cursor)
