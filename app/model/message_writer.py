"""The batched message writer: group commit, exactly-once by `cid`, on both engines.

A message is stored before anyone is told about it. The writer takes everything queued since
its last commit and writes it in one transaction ("合并数据库的写次数"), so under load one
commit carries many messages. Every row has a `cid` (the client's own id, or one the server
makes): `INSERT IGNORE` on the unique (cid, sender) pair plus one read-back turns a resend into
the original message instead of a second one, even across processes. On SQLite the writer has
its own connection and thread (app/model/sqlite_writer.py); on MySQL/MariaDB it uses the pool.
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
from tortoise.transactions import in_transaction

from app.chat.wire import CMD_SINGLE, SERVER_CID_PREFIX
from app.model import message_changes, sqlite_writer
from app.model.database import connection_name, database_unavailable
from app.model.message_store import COLUMNS as _COLUMNS
from app.model.message_store import ROW_KEYS as _ROW_KEYS
from app.model.message_store import SELECT as _SELECT
from app.model.tables import now_ms
from app.service.search import mysql_index, sqlite_index

log = logging.getLogger("imchat.messages")

MAX_BATCH = 500
# Positions in a row read with _SELECT.
_CID_AT = 1 + _COLUMNS.index("cid")
_SENDER_AT = 1 + _COLUMNS.index("sender_id")


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
    # The message a reply answers or a change entry changes (0: none), and whom it mentions
    # (see app/model/message_changes.py).
    ref_id: int = 0
    mentions: str = ""


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
        store = _SqliteBatch(self._sqlite_sql, batch, sqlite.max_variables)
        await sqlite.run(lambda connection: sqlite_writer.transaction(connection, store.run))
        existing, fresh, ids = store.existing, store.fresh, store.ids
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
        # Server-made cids are new by construction: only client cids can be resends.
        client_cids = [c for c in cids if not c.startswith(SERVER_CID_PREFIX)]
        async with in_transaction(connection_name()) as connection:
            before = await _rows_by_cid(connection, sql, client_cids)
            existing = {(r["cid"], r["sender_id"]) for r in before} & keys
            fresh = _fresh_drafts(batch, existing)
            if fresh:
                await connection.execute_many(sql.insert, [_values(d) for d in fresh])
                after = await _rows_by_cid(connection, sql, cids)
            else:
                after = before
            stored = {(r["cid"], r["sender_id"]): r for r in after}
            await _apply_relations(connection, sql, fresh, stored)
            missing = keys - stored.keys()
            if missing:
                # Inside the transaction, so that it rolls back: the retry one by one must not
                # find this batch's rows and take them for resends (which are not published).
                raise RuntimeError(f"{len(missing)} stored messages could not be read back "
                                   "by their cid")
        self.written += len(fresh)
        fresh_ids = {id(d) for d in fresh}
        return [(stored[(d.cid, d.sender_id)], id(d) not in fresh_ids) for d in batch]


# Cids a read-back SELECT names at most on MySQL/MariaDB: within eq_range_index_dive_limit (200
# by default) the optimizer counts each cid's rows in the index; beyond it, it estimates from
# the table's statistics, and on a table that had about a thousand messages it chose to scan
# the whole table, a plan kept while the table grew under load (bench/NOTES.md, session 8).
_CIDS_A_SELECT = 100


async def _rows_by_cid(connection: Any, sql: _Sql, cids: Sequence[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(cids), _CIDS_A_SELECT):
        part = cids[start:start + _CIDS_A_SELECT]
        rows += await connection.execute_query_dict(
            f"SELECT {_SELECT} FROM im_message WHERE cid IN ({sql.marks(len(part))})", part)
    return rows


class _SqliteBatch:
    """One batch written on the SQLite writer's connection, inside its transaction (`run`
    runs in the writer thread): rows stored before (resends), the drafts inserted, their ids."""

    def __init__(self, statements: _SqliteStatements, batch: Sequence[Draft],
                 max_variables: int) -> None:
        self.statements = statements
        self.batch = batch
        self.max_variables = max_variables
        self.existing: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.fresh: list[Draft] = []
        self.ids: dict[tuple[str, int], int] = {}

    def run(self, connection: Any) -> None:
        # Server-made cids are new by construction: only client cids can be resends.
        client_cids = sorted({d.cid for d in self.batch
                              if not d.cid.startswith(SERVER_CID_PREFIX)})
        if client_cids:
            for row in connection.execute(self.statements.select_by_cid(len(client_cids)),
                                          client_cids):
                self.existing[(row[_CID_AT], row[_SENDER_AT])] = row
            self.fresh = _fresh_drafts(self.batch, set(self.existing))
        else:
            self.fresh = list(self.batch)  # server-made cids only: all distinct
        if not self.fresh:
            return
        if sqlite_writer.HAS_RETURNING:
            self._insert_returning(connection)
        else:
            connection.executemany(self.statements.insert, [_values(d) for d in self.fresh])
        if len(self.ids) < len(self.fresh):
            self._read_back(connection)
        for draft in self.fresh:
            if message_changes.has_relations(draft):
                _relations_now(connection, draft, self.ids[(draft.cid, draft.sender_id)])

    def _insert_returning(self, connection: Any) -> None:
        # One statement for the batch (or a few, within SQLite's limit on parameters), rows in
        # batch order: ids grow in that order.
        step = max(1, self.max_variables // len(_COLUMNS))
        fresh = self.fresh
        for start in range(0, len(fresh), step):
            part = fresh[start:start + step]
            self.ids.update(((cid, sender_id), new_id)
                            for new_id, cid, sender_id in connection.execute(
                                self.statements.insert_returning(len(part)),
                                list(itertools.chain.from_iterable(map(_values, part)))))

    def _read_back(self, connection: Any) -> None:
        """Read back what RETURNING did not answer (old SQLite; or a row another process
        stored first, which BEGIN IMMEDIATE rules out: then that row is the message)."""
        ids = self.ids
        wanted = sorted({d.cid for d in self.fresh if (d.cid, d.sender_id) not in ids})
        by_key = {(r[_CID_AT], r[_SENDER_AT]): r for r in connection.execute(
            self.statements.select_by_cid(len(wanted)), wanted)}
        kept: list[Draft] = []
        for draft in self.fresh:
            key = (draft.cid, draft.sender_id)
            if key in ids:
                kept.append(draft)
            elif sqlite_writer.HAS_RETURNING:
                self.existing[key] = by_key[key]  # ignored: stored before
            else:
                ids[key] = by_key[key][0]
                kept.append(draft)
        self.fresh = kept


def _relations_now(connection: Any, draft: Draft, message_id: int) -> None:
    """The relation row and effects of a reply or change just inserted (the writer's thread);
    the message a change changes leaves the search index and comes back as it now reads."""
    changed = [c for c in [message_changes.changed_message(draft)] if c]
    sqlite_index.unindex_now(connection, changed)
    for statement, values in message_changes.statements(draft, message_id):
        connection.execute(statement, values)
    sqlite_index.index_again_now(connection, changed)


async def _apply_relations(connection: Any, sql: _Sql, fresh: Sequence[Draft],
                           stored: dict[tuple[str, int], dict[str, Any]]) -> None:
    """The relation rows and effects of the replies and changes just inserted (and the search
    index of the messages changed, as _relations_now)."""
    index = sqlite_index if sql.mark == "?" else mysql_index
    for draft in fresh:
        row = stored.get((draft.cid, draft.sender_id))
        if row is not None and message_changes.has_relations(draft):
            row["ref_id"], row["mentions"] = draft.ref_id or None, draft.mentions
            changed = [c for c in [message_changes.changed_message(draft)] if c]
            await index.unindex(connection, changed)
            for statement, values in message_changes.statements(draft, row["id"]):
                await connection.execute_query(statement.replace("?", sql.mark), list(values))
            await index.index_again(connection, changed)


def _row(draft: Draft, message_id: int) -> dict[str, Any]:
    """The stored row of a draft just inserted (what reading it back would answer)."""
    single = draft.cmd == CMD_SINGLE
    return {"id": message_id, "cmd": draft.cmd, "sender_id": draft.sender_id,
            "dst_user_id": draft.dstid if single else None,
            "community_id": None if single else draft.dstid, "cid": draft.cid,
            "media": draft.media, "content": draft.content, "pic": draft.pic, "url": draft.url,
            "memo": draft.memo, "amount": draft.amount, "created_ms": draft.created_ms,
            "ref_id": draft.ref_id or None, "mentions": draft.mentions}


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
