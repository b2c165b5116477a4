"""Chat messages: the batched writer (group commit, exactly-once by `cid`), and the queries that
read them back — history, what a user missed, conversations with unread counts, read marks.

A message is stored before anyone is told about it. The writer takes everything queued since
its last commit and writes it in one transaction ("合并数据库的写次数"), so under load one
commit carries many messages. Every row has a `cid` (the client's own id, or one the server
makes): `INSERT IGNORE` on the unique (cid, sender) pair plus one read-back turns a resend into
the original message instead of a second one, even across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tortoise import Tortoise
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.chat.wire import (
    CMD_GROUP,
    CMD_SINGLE,
    SERVER_CID_PREFIX,
    wire_message,
    wire_size,
)
from app.model import sqlite_writer
from app.model.database import connection_name, database_unavailable, fetch_all
from app.model.tables import ReadMark, now_ms
from app.service import access

log = logging.getLogger("imchat.messages")

MAX_BATCH = 500
# About how many bytes of messages one /message/history answer carries at most.
HISTORY_PAGE_BYTES = 512 * 1024

_COLUMNS = ("cmd", "sender_id", "dst_user_id", "community_id", "cid", "media", "content", "pic",
            "url", "memo", "amount", "created_ms")
_SELECT = "id, " + ", ".join(_COLUMNS)
# Positions in a row read with _SELECT.
_CID_AT = 1 + _COLUMNS.index("cid")
_SENDER_AT = 1 + _COLUMNS.index("sender_id")
_ROW_KEYS = ("id", *_COLUMNS)


@dataclasses.dataclass(slots=True)
class Draft:
    """A message accepted from a client, waiting for the writer."""

    cmd: int
    sender_id: int
    dstid: int
    media: int
    content: str
    pic: str
    url: str
    memo: str
    amount: int
    cid: str
    created_ms: int
    # Called once with (draft, stored row, was_duplicate) after the commit, or with an error.
    done: Callable[[Draft, dict[str, Any] | None, bool], None]


class _Sql:
    """The few raw statements the hot path needs, in the connection's placeholder style."""

    def __init__(self, dialect: str) -> None:
        mark = "?" if dialect == "sqlite" else "%s"
        self.mark = mark
        ignore = "INSERT OR IGNORE" if dialect == "sqlite" else "INSERT IGNORE"
        self.insert = (f"{ignore} INTO im_message ({', '.join(_COLUMNS)}) "
                       f"VALUES ({', '.join([mark] * len(_COLUMNS))})")

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


class _SqliteStatements:
    """The writer's statements on its own SQLite connection, text cached per batch size."""

    def __init__(self) -> None:
        self.insert = _Sql("sqlite").insert
        row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
        self._row = row
        self._returning: dict[int, str] = {}
        self._select: dict[int, str] = {}

    def insert_returning(self, count: int) -> str:
        sql = self._returning.get(count)
        if sql is None:
            sql = self._returning[count] = (
                f"INSERT OR IGNORE INTO im_message ({', '.join(_COLUMNS)}) VALUES "
                f"{', '.join([self._row] * count)} RETURNING id, cid, sender_id")
        return sql

    def select_by_cid(self, count: int) -> str:
        sql = self._select.get(count)
        if sql is None:
            sql = self._select[count] = (
                f"SELECT {_SELECT} FROM im_message WHERE cid IN ({', '.join('?' * count)})")
        return sql


class MessageWriter:
    """The single writer task of this process: queue in, batched commits out."""

    def __init__(self, max_batch: int = MAX_BATCH, high_water: int = 5000,
                 publish_scope: AbstractContextManager[Any] | None = None,
                 timeout: float = 10.0) -> None:
        self.max_batch = max_batch
        # A batch not stored within this many seconds is refused (the senders resend), and so
        # is a message that waited that long behind it.
        self.timeout = timeout
        self.timeouts = 0
        # Why the database failed the last batch (down, out of disk, too slow), and when: for
        # /health.
        self.failing = ""
        self.failed_at = 0.0
        # (cid, sender) of messages whose write failed in a way that may have committed.
        self._uncertain: set[tuple[str, int]] = set()
        # Entered around handing a committed batch to the senders' sessions (the app's write
        # coalescer: each recipient's frames of the batch go out in one write).
        self._publish_scope = publish_scope or contextlib.nullcontext()
        self.high_water = high_water
        self._queue: asyncio.Queue[Draft] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sql: _Sql | None = None
        # SQLite: the writer's own connection and thread (see app/model/sqlite_writer.py).
        self._sqlite: sqlite_writer.SqliteWriteConnection | None = None
        self._sqlite_sql = _SqliteStatements()
        self._idle = asyncio.Event()
        self._idle.set()
        # Set while a batch is between its commit and the hand-over of its rows to the hub.
        self._in_flight: asyncio.Future[None] | None = None
        self.batches = 0
        self.written = 0
        # Told each committed batch after its hand-over (the app's metrics).
        self.on_batch: Callable[[Sequence[Draft]], None] | None = None
        # Server-made cids: a random prefix per writer and a counter, unique across processes
        # and restarts without a system call per message.
        self._cid_prefix = SERVER_CID_PREFIX + secrets.token_urlsafe(9) + "."
        self._cid_counter = itertools.count(1)

    def new_cid(self) -> str:
        return f"{self._cid_prefix}{next(self._cid_counter):x}"

    def start(self) -> None:
        connection = Tortoise.get_connection(connection_name())
        dialect = connection.capabilities.dialect
        self._sql = _Sql(dialect)
        path = getattr(connection, "filename", None)
        if dialect == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
            self._sqlite = sqlite_writer.SqliteWriteConnection(
                path, getattr(connection, "pragmas", {}))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="message-writer")

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, draft: Draft) -> None:
        self._idle.clear()
        self._queue.put_nowait(draft)

    async def published(self) -> None:
        """Return once every message committed before this call has been published.

        A catch-up query may see a row that is committed but not yet handed to the hub; after
        this, its live copy has reached the session (held back and dropped as a repeat) rather
        than arriving after the catch-up as a duplicate. Only the batch in flight can be in
        that state: the next one starts after this one's rows are published."""
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (used at shutdown)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sqlite is not None:
            sqlite, self._sqlite = self._sqlite, None
            await sqlite.close()
        log.info("message writer stopped: %d messages stored in %d batches",
                 self.written, self.batches)

    async def _run(self) -> None:
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            in_flight = self._in_flight = asyncio.get_running_loop().create_future()
            try:
                await self._store(batch)
            finally:
                self._in_flight = None
                in_flight.set_result(None)
            if queue.empty():
                self._idle.set()

    async def _store(self, batch: list[Draft]) -> None:
        try:
            rows = await self._commit(batch)
        except Exception as error:
            if database_unavailable(error):
                # The database is away or out of disk: every message would fail the same way.
                self._failed(error)
                self._unsure(batch)
                log.warning("storing %d messages failed (%s); the senders are told to resend",
                            len(batch), error)
                for draft in batch:
                    _finish(draft, None, False)
                return
            # One bad message must not sink the others of its batch: store them one by one.
            log.exception("storing a batch of %d failed; retrying them one by one", len(batch))
            await self._write_one_by_one(batch)
            return
        if rows is not None:  # None: refused when late, handed over if it did commit
            self._hand_over(batch, rows)

    def _hand_over(self, batch: Sequence[Draft], rows: list[tuple[dict[str, Any], bool]]) -> None:
        self.failing = ""
        self.batches += 1
        uncertain = self._uncertain
        with self._publish_scope:
            for draft, (row, duplicate) in zip(batch, rows, strict=True):
                if duplicate and uncertain:
                    key = (draft.cid, draft.sender_id)
                    if key in uncertain:
                        # The first try failed as far as anyone knew, yet committed (the link
                        # broke after the commit): this resend publishes it.
                        uncertain.discard(key)
                        duplicate = False
                _finish(draft, row, duplicate)
        if self.on_batch is not None:
            self.on_batch(batch)

    def _unsure(self, batch: Sequence[Draft]) -> None:
        """A write failed or was abandoned in a way that may still have committed."""
        if len(self._uncertain) > 100_000:
            self._uncertain.clear()  # bounded; beyond that a resend is only acknowledged
        self._uncertain.update((d.cid, d.sender_id) for d in batch)

    def _failed(self, error: BaseException | str) -> None:
        self.failing = (error if isinstance(error, str)
                        else f"storing messages failed: {error or type(error).__name__}")
        self.failed_at = time.monotonic()

    def health(self, within: float = 30.0) -> str:
        """Why storing messages failed, if the last batch failed in the last `within` s."""
        if self.failing and time.monotonic() - self.failed_at < within:
            return self.failing
        return ""

    async def _commit(self, batch: list[Draft]) -> list[tuple[dict[str, Any], bool]] | None:
        """Write the batch within the deadline and answer its rows. Past the deadline every
        sender is told at once to resend, the write is still awaited (a statement in flight
        cannot be taken back), and should it commit after all its messages are published and
        acknowledged then: nothing is stored without its sender and recipients knowing (a
        resend with the same cid is answered as a duplicate). Answers None in that case."""
        write = asyncio.get_running_loop().create_task(self._write(batch))
        done, _ = await asyncio.wait({write}, timeout=self.timeout)
        if done:
            return write.result()
        self.timeouts += 1
        self._failed(f"storing messages took longer than {self.timeout:g} s")
        log.warning("storing %d messages took longer than %g s; the senders are told to resend",
                    len(batch), self.timeout)
        for draft in batch:
            _finish(draft, None, False)
        while not done:
            done, _ = await asyncio.wait({write}, timeout=min(1.0, self.timeout))
            self._refuse_stale()
        try:
            rows = write.result()
        except Exception as error:
            self._failed(error)
            self._unsure(batch)
            log.warning("a late batch of %d messages failed too (%s)", len(batch), error)
            return None
        log.warning("a late batch of %d messages was stored after all; delivering it",
                    len(batch))
        self._hand_over(batch, rows)
        return None

    def _refuse_stale(self) -> None:
        """While a write is stuck: refuse the queued messages that have waited past the
        deadline (they were never written; their senders resend)."""
        queue = self._queue
        oldest_ms = now_ms() - self.timeout * 1000
        if queue.empty():
            return
        waiting = [queue.get_nowait() for _ in range(queue.qsize())]
        for draft in waiting:
            if draft.created_ms < oldest_ms:
                _finish(draft, None, False)
            else:
                queue.put_nowait(draft)

    async def _write_one_by_one(self, batch: Sequence[Draft]) -> None:
        for draft in batch:
            try:
                rows = await self._commit([draft])
            except Exception as error:
                self._failed(error)
                self._unsure([draft])
                log.exception("storing a message from user %s failed; the sender gets an error",
                              draft.sender_id)
                _finish(draft, None, False)
            else:
                if rows is not None:
                    self._hand_over([draft], rows)

    async def _write(self, batch: Sequence[Draft]) -> list[tuple[dict[str, Any], bool]]:
        if self._sqlite is not None:
            return await self._write_sqlite(batch)
        return await self._write_tortoise(batch)

    async def _write_sqlite(self, batch: Sequence[Draft]) -> list[tuple[dict[str, Any], bool]]:
        """One hop into the writer thread per batch: the transaction, the check for resends,
        the INSERT and the new ids all happen there; the new rows are made from the drafts."""
        sqlite = self._sqlite
        assert sqlite is not None
        statements = self._sqlite_sql
        # Server-made cids are new by construction: only client cids can be resends.
        client_cids = sorted({d.cid for d in batch if not d.cid.startswith(SERVER_CID_PREFIX)})

        def store(connection: Any) -> tuple[dict[tuple[str, int], tuple[Any, ...]],
                                            list[Draft], dict[tuple[str, int], int]]:
            existing: dict[tuple[str, int], tuple[Any, ...]] = {}
            if client_cids:
                for row in connection.execute(statements.select_by_cid(len(client_cids)),
                                              client_cids):
                    existing[(row[_CID_AT], row[_SENDER_AT])] = row
                fresh = _fresh_drafts(batch, set(existing))
            else:
                fresh = list(batch)  # server-made cids only: all distinct
            ids: dict[tuple[str, int], int] = {}
            if not fresh:
                return existing, fresh, ids
            if sqlite_writer.HAS_RETURNING:
                # One statement for the batch (or a few, within SQLite's limit on parameters),
                # rows in batch order: ids grow in that order.
                step = max(1, sqlite.max_variables // len(_COLUMNS))
                for start in range(0, len(fresh), step):
                    part = fresh[start:start + step]
                    ids.update(((cid, sender_id), new_id)
                               for new_id, cid, sender_id in connection.execute(
                                   statements.insert_returning(len(part)),
                                   list(itertools.chain.from_iterable(map(_values, part)))))
            else:
                connection.executemany(statements.insert, [_values(d) for d in fresh])
            if len(ids) < len(fresh):
                # Read back what RETURNING did not answer (old SQLite; or a row another process
                # stored first, which BEGIN IMMEDIATE rules out: then that row is the message).
                wanted = sorted({d.cid for d in fresh if (d.cid, d.sender_id) not in ids})
                by_key = {(r[_CID_AT], r[_SENDER_AT]): r for r in connection.execute(
                    statements.select_by_cid(len(wanted)), wanted)}
                kept: list[Draft] = []
                for draft in fresh:
                    key = (draft.cid, draft.sender_id)
                    if key in ids:
                        kept.append(draft)
                    elif sqlite_writer.HAS_RETURNING:
                        existing[key] = by_key[key]  # ignored: stored before
                    else:
                        ids[key] = by_key[key][0]
                        kept.append(draft)
                fresh = kept
            return existing, fresh, ids

        existing, fresh, ids = await sqlite.run(
            lambda connection: sqlite_writer.transaction(connection, store))
        self.written += len(fresh)
        if len(fresh) == len(batch):  # the usual case: every message of the batch is new
            return [(_row(d, ids[(d.cid, d.sender_id)]), False) for d in batch]
        stored: dict[tuple[str, int], dict[str, Any]] = {
            key: dict(zip(_ROW_KEYS, row, strict=True)) for key, row in existing.items()}
        fresh_ids = set()
        for draft in fresh:
            key = (draft.cid, draft.sender_id)
            stored[key] = _row(draft, ids[key])
            fresh_ids.add(id(draft))
        return [(stored[(d.cid, d.sender_id)], id(d) not in fresh_ids) for d in batch]

    async def _write_tortoise(self, batch: Sequence[Draft]) -> list[tuple[dict[str, Any], bool]]:
        assert self._sql is not None
        sql = self._sql
        keys = {(d.cid, d.sender_id) for d in batch}
        cids = sorted({d.cid for d in batch})
        select = f"SELECT {_SELECT} FROM im_message WHERE cid IN ({sql.marks(len(cids))})"
        # Server-made cids are new by construction: only client cids can be resends.
        client_cids = [c for c in cids if not c.startswith(SERVER_CID_PREFIX)]
        async with in_transaction(connection_name()) as connection:
            before = (await connection.execute_query_dict(
                f"SELECT {_SELECT} FROM im_message WHERE cid IN ({sql.marks(len(client_cids))})",
                client_cids) if client_cids else [])
            existing = {(r["cid"], r["sender_id"]) for r in before} & keys
            fresh = _fresh_drafts(batch, existing)
            if fresh:
                await connection.execute_many(sql.insert, [_values(d) for d in fresh])
                after = await connection.execute_query_dict(select, cids)
            else:
                after = before
            stored = {(r["cid"], r["sender_id"]): r for r in after}
            missing = keys - stored.keys()
            if missing:
                # Inside the transaction, so that it rolls back: the retry one by one must not
                # find this batch's rows and take them for resends (which are not published).
                raise RuntimeError(f"{len(missing)} stored messages could not be read back "
                                   "by their cid")
        self.written += len(fresh)
        fresh_ids = {id(d) for d in fresh}
        return [(stored[(d.cid, d.sender_id)], id(d) not in fresh_ids) for d in batch]


def _row(draft: Draft, message_id: int) -> dict[str, Any]:
    """The stored row of a draft just inserted (what reading it back would answer)."""
    single = draft.cmd == CMD_SINGLE
    return {"id": message_id, "cmd": draft.cmd, "sender_id": draft.sender_id,
            "dst_user_id": draft.dstid if single else None,
            "community_id": None if single else draft.dstid, "cid": draft.cid,
            "media": draft.media, "content": draft.content, "pic": draft.pic, "url": draft.url,
            "memo": draft.memo, "amount": draft.amount, "created_ms": draft.created_ms}


def _fresh_drafts(batch: Sequence[Draft], stored: set[tuple[str, int]]) -> list[Draft]:
    """The drafts to insert: not stored before, and each (cid, sender) once within the batch."""
    fresh: list[Draft] = []
    seen = set(stored)
    for draft in batch:
        key = (draft.cid, draft.sender_id)
        if key not in seen:
            seen.add(key)
            fresh.append(draft)
    return fresh


def _finish(draft: Draft, row: dict[str, Any] | None, duplicate: bool) -> None:
    """Tell the sender's session; whatever it raises stays there, the writer lives on."""
    try:
        draft.done(draft, row, duplicate)
    except Exception:
        log.exception("finishing message %s of user %s failed", row and row.get("id"),
                      draft.sender_id)


def _values(draft: Draft) -> tuple[Any, ...]:
    single = draft.cmd == CMD_SINGLE
    return (draft.cmd, draft.sender_id, draft.dstid if single else None,
            None if single else draft.dstid, draft.cid, draft.media, draft.content, draft.pic,
            draft.url, draft.memo, draft.amount, draft.created_ms)


# A user's messages after an id: sent to them, sent by them one to one (for their other
# devices), and their groups' since they joined; each branch walks one index.
_MISSED_SQL = f"""
    SELECT {{columns}} FROM (
        SELECT {_SELECT} FROM im_message WHERE dst_user_id = ? AND id > ?
        UNION ALL
        SELECT {_SELECT} FROM im_message WHERE sender_id = ? AND cmd = {CMD_SINGLE} AND id > ?
        UNION ALL
        SELECT m.id, {", ".join("m." + c for c in _COLUMNS)}
          FROM im_membership s JOIN im_message m
            ON m.community_id = s.community_id AND m.id > ?
         WHERE s.user_id = ? AND m.created_ms >= s.created_ms
    ) AS missed ORDER BY id {{order}} LIMIT {{limit}}"""


async def _missed(user_id: int, since_id: int, limit: int, newest: bool,
                  columns: str = _SELECT) -> list[dict[str, Any]]:
    sql = _MISSED_SQL.format(columns=columns, order="DESC" if newest else "ASC", limit=int(limit))
    return await fetch_all(sql, (user_id, since_id, user_id, since_id, since_id, user_id))


async def missed_by(user_id: int, since_id: int, limit: int) -> list[dict[str, Any]]:
    """Messages of the user's conversations after `since_id`, oldest first."""
    return await _missed(user_id, since_id, limit, newest=False)


async def newest_missed_floor(user_id: int, since_id: int, limit: int) -> int:
    """Where a catch-up limited to the newest `limit` missed messages starts: `since_id` when
    no more are waiting, else the id just below the newest `limit` (ids only are read, so a
    backlog of large messages is not loaded to be thrown away)."""
    rows = await _missed(user_id, since_id, limit + 1, newest=True, columns="id")
    if len(rows) <= limit:
        return since_id
    return int(rows[-1]["id"])


async def history(user_id: int, cmd: int, peer_id: int, before_id: int | None,
                  limit: int, max_bytes: int = HISTORY_PAGE_BYTES,
                  ) -> tuple[list[dict[str, Any]], bool]:
    """One conversation's messages below `before_id`, oldest first; participants only; and
    whether the page was cut short by its size.

    At most `limit` rows, and no more than about `max_bytes` of them (always at least one):
    an answer nobody reads sits in the server's memory, so a page of large messages is cut
    short, and the caller asks again from its oldest id."""
    rows = await _conversation_rows(user_id, cmd, peer_id, before_id or 2**62, limit,
                                    newer=False)
    kept = _within_bytes(rows, max_bytes)
    return list(reversed(kept)), len(kept) < len(rows)


async def history_after(user_id: int, cmd: int, peer_id: int, after_id: int, limit: int,
                        max_bytes: int = HISTORY_PAGE_BYTES) -> list[dict[str, Any]]:
    """One conversation's messages above `after_id`, oldest first (the newer side of a page
    around a message, e.g. a search result); the same rule and size bound as history()."""
    return _within_bytes(
        await _conversation_rows(user_id, cmd, peer_id, after_id, limit, newer=True), max_bytes)


def _within_bytes(rows: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The leading rows that fit in about `max_bytes` (at least one)."""
    size = 0
    for kept, row in enumerate(rows):
        size += wire_size(row)
        if size > max_bytes and kept:
            return rows[:kept]
    return rows


async def _conversation_rows(user_id: int, cmd: int, peer_id: int, bound: int, limit: int,
                             newer: bool) -> list[dict[str, Any]]:
    """Up to `limit` messages of one conversation on one side of the id `bound`, nearest
    first: older ones newest first, or (`newer`) newer ones oldest first."""
    side, order = (">", "ASC") if newer else ("<", "DESC")
    if cmd == CMD_GROUP:
        # A member reads what was said since they joined, as sync and the offline push give
        # them: learning a group's name does not open its past.
        joined_ms = await access.check_read(user_id, cmd, peer_id)
        return await fetch_all(
            f"SELECT {_SELECT} FROM im_message WHERE community_id = ? AND id {side} ? "
            f"AND created_ms >= ? ORDER BY id {order} LIMIT {int(limit)}",
            (peer_id, bound, joined_ms))
    return await fetch_all(
        f"""SELECT {_SELECT} FROM (
            SELECT {_SELECT} FROM im_message WHERE dst_user_id = ? AND sender_id = ? AND id {side} ?
            UNION ALL
            SELECT {_SELECT} FROM im_message WHERE dst_user_id = ? AND sender_id = ? AND id {side} ?
        ) AS conversation ORDER BY id {order} LIMIT {int(limit)}""",
        (peer_id, user_id, bound, user_id, peer_id, bound))


async def conversations(user_id: int) -> list[dict[str, Any]]:
    """Each conversation the user has messages in: last message, unread count, read mark."""
    direct = await fetch_all(
        f"""SELECT peer, MAX(id) AS last_id FROM (
            SELECT dst_user_id AS peer, id FROM im_message WHERE sender_id = ? AND cmd = {CMD_SINGLE}
            UNION ALL
            SELECT sender_id AS peer, id FROM im_message WHERE dst_user_id = ?
        ) AS pairs GROUP BY peer""", (user_id, user_id))
    groups = await fetch_all(
        """SELECT m.community_id AS peer, MAX(m.id) AS last_id
             FROM im_membership s JOIN im_message m ON m.community_id = s.community_id
            WHERE s.user_id = ? AND m.created_ms >= s.created_ms
            GROUP BY m.community_id""", (user_id,))
    marks = {(r.cmd, r.peer_id): r.last_read_id for r in await ReadMark.filter(user_id=user_id)}
    wanted = [(CMD_SINGLE, r["peer"], r["last_id"]) for r in direct]
    wanted += [(CMD_GROUP, r["peer"], r["last_id"]) for r in groups]
    if not wanted:
        return []
    last_ids = [w[2] for w in wanted]
    last_rows = {r["id"]: r for r in await fetch_all(
        f"SELECT {_SELECT} FROM im_message WHERE id IN ({', '.join('?' * len(last_ids))})",
        last_ids)}
    unread = {(r["cmd"], r["peer"]): int(r["n"]) for r in await fetch_all(
        _UNREAD_SQL, (user_id, user_id, user_id, user_id))}
    result = []
    for cmd, peer, last_id in wanted:
        result.append({"cmd": cmd, "dstid": peer, "last": wire_message(last_rows[last_id]),
                       "unread": unread.get((cmd, peer), 0),
                       "read_id": marks.get((cmd, peer), 0)})
    result.sort(key=lambda c: c["last"]["id"], reverse=True)
    return result


# Unread messages of every conversation of a user, counted in one query: those after the
# user's read mark (none: all), from the peer in one-to-one, from others since joining in groups.
_UNREAD_SQL = f"""
    SELECT {CMD_SINGLE} AS cmd, m.sender_id AS peer, COUNT(*) AS n
      FROM im_message m
      LEFT JOIN im_readmark r ON r.user_id = m.dst_user_id AND r.cmd = {CMD_SINGLE}
                             AND r.peer_id = m.sender_id
     WHERE m.dst_user_id = ? AND m.id > COALESCE(r.last_read_id, 0)
     GROUP BY m.sender_id
    UNION ALL
    SELECT {CMD_GROUP} AS cmd, m.community_id AS peer, COUNT(*) AS n
      FROM im_membership s
      JOIN im_message m ON m.community_id = s.community_id AND m.created_ms >= s.created_ms
      LEFT JOIN im_readmark r ON r.user_id = ? AND r.cmd = {CMD_GROUP}
                             AND r.peer_id = s.community_id
     WHERE s.user_id = ? AND m.sender_id <> ? AND m.id > COALESCE(r.last_read_id, 0)
     GROUP BY m.community_id"""


async def mark_read(user_id: int, cmd: int, peer_id: int, message_id: int) -> int:
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


async def read_marks_of(cmd: int, peer_id: int, user_id: int) -> list[dict[str, Any]]:
    """Who has read how far in one conversation (for showing receipts after a reload)."""
    if cmd == CMD_GROUP:
        marks = await ReadMark.filter(cmd=CMD_GROUP, peer_id=peer_id)
    else:
        marks = await ReadMark.filter(cmd=CMD_SINGLE, peer_id=user_id, user_id=peer_id)
    return [{"userid": m.user_id, "id": m.last_read_id} for m in marks]

