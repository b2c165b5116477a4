"""The hub: this process's open chat sessions by user, the group → online members index, and the
delivery of broker envelopes to them. Services publish through the hub only after commit.

Fan-out never scans all connections: a group message goes to `group_members[group]`, a
one-to-one message to the two users' sessions. A frame is encoded once per envelope and the
same bytes are written to every recipient; a recipient that cannot keep up is closed by its
connection (never awaited), so nobody waits for anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

from app.chat.broker import Broker, Envelope, MemoryBroker
from app.chat.wire import CLOSE_SESSION_ENDED, CMD_MUTE, CMD_PRESENCE, CMD_RESYNC, encode
from app.model import message_store, relations, sign_ins
from app.model.tables import now_ms
from app.util.batching import BatchedLoader
from app.websocket import encode_text_frame

log = logging.getLogger("imchat.hub")


class Recipient(Protocol):
    """What the hub knows of a connected session (app/chat/handler.py makes them): who it is,
    and the three things the hub asks of it. The hub parses no frames."""

    user_id: int
    sid: int
    v2: bool
    token_hash: str
    expires_ms: int

    def push(self, frame: bytes, message_id: int) -> bool:
        """Write a live frame (or hold it while catching up); True when written now."""

    def close(self, code: int, reason: str) -> None: ...

    def resync(self, since: int, frame: bytes) -> None:
        """Messages above `since` may have been missed: catch up (v2: send `frame`)."""


class Hub:
    def __init__(self, broker: Broker, check_every: float = 30.0) -> None:
        self.broker = broker
        self.check_every = check_every
        self.sessions: dict[int, list[Recipient]] = {}
        self.group_members: dict[int, set[int]] = {}
        self.user_groups: dict[int, set[int]] = {}
        self.user_friends: dict[int, set[int]] = {}
        # Highest message id written to a user's v1 connections; persisted in the background.
        self.legacy_cursor: dict[int, int] = {}
        self._dirty_cursors: set[int] = set()
        # Users with no session here whose cursor did not move since the last maintenance round.
        self._quiet_cursors: set[int] = set()
        self._session_ids = itertools.count(1)
        # Groups and friends of users connecting: one query for all who connect meanwhile.
        self._relations: BatchedLoader[int, tuple[AbstractSet[int], AbstractSet[int]]] = (
            BatchedLoader(relations.groups_and_friends_by_user, (frozenset(), frozenset())))
        self._loading: dict[int, asyncio.Future[None]] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._joins_while_reloading: set[tuple[int, int]] | None = None
        # Message frames written to connections (read by the app's metrics at a scrape).
        self.delivered = 0

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self.deliver, self.resync,
                                max_message_id=await message_store.newest_message_id())
        self._maintenance = asyncio.get_running_loop().create_task(
            self._maintain(self.check_every), name="hub-maintenance")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.persist_cursors()
        await self.broker.stop()

    async def _maintain(self, every: float = 30.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.expire_sessions()
                await self.close_revoked_sessions()
                await self.persist_cursors()
                self.prune_cursors()
            except Exception:
                log.exception("hub maintenance failed; retrying next round")

    def expire_sessions(self) -> None:
        now = now_ms()
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                if session.expires_ms <= now:
                    session.close(CLOSE_SESSION_ENDED, "session expired")

    async def close_revoked_sessions(self, chunk: int = 500) -> int:
        """Close the sockets whose sign-in is no longer in the database: revoked by a process
        that cannot reach this hub (the admin's `imchat user disable`, another node whose
        broker message was lost). Answers how many were closed."""
        by_token: dict[str, list[Recipient]] = {}
        for sessions in self.sessions.values():
            for session in sessions:
                by_token.setdefault(session.token_hash, []).append(session)
        hashes = list(by_token)
        closed = 0
        for start in range(0, len(hashes), chunk):
            part = hashes[start:start + chunk]
            alive = await sign_ins.valid_token_hashes(part)
            for token_hash in part:
                if token_hash not in alive:
                    for session in by_token[token_hash]:
                        session.close(CLOSE_SESSION_ENDED, "session ended")
                        closed += 1
        return closed

    async def persist_cursors(self) -> None:
        dirty, self._dirty_cursors = self._dirty_cursors, set()
        for user_id in dirty:
            await self._persist_cursor(user_id)

    async def _persist_cursor(self, user_id: int, cursor: int | None = None) -> None:
        cursor = cursor or self.legacy_cursor.get(user_id)
        if cursor:
            await message_store.store_legacy_cursor(user_id, cursor)

    def prune_cursors(self) -> None:
        """Forget the v1 cursors of users with no session here that did not move for a whole
        maintenance round: stored by then (this process's by persist_cursors, another process's
        by its own), so the memory held is that of the users connected lately, not of all."""
        for user_id in self._quiet_cursors:
            if user_id not in self.sessions and user_id not in self._dirty_cursors:
                self.legacy_cursor.pop(user_id, None)
        self._quiet_cursors = set(self.legacy_cursor).difference(self.sessions)

    async def load_legacy_cursor(self, user_id: int, stored: int | None = None) -> int:
        """Where a new v1 connection of the user starts: the stored cursor (`stored`, as read
        with the connection's sign-in, else read now) or the one other processes published,
        whichever is further (another process may have delivered more to this user's v1
        connections)."""
        await self.broker.read_up_to_now()
        if stored is None:
            stored = await message_store.legacy_cursor(user_id)
        cursor = max(stored, self.legacy_cursor.get(user_id, 0))
        self.legacy_cursor[user_id] = cursor
        self._quiet_cursors.discard(user_id)
        return cursor

    # -- sessions ---------------------------------------------------------------------------

    def next_session_id(self) -> int:
        return next(self._session_ids)

    async def attach(self, session: Recipient) -> None:
        """Register a session; the first one of a user loads its groups and friends, and the
        user's other devices wait for that load instead of starting another."""
        user_id = session.user_id
        loading = self._loading.get(user_id)
        if loading is not None:
            await asyncio.shield(loading)
        elif user_id not in self.sessions:
            loading = self._loading[user_id] = asyncio.get_running_loop().create_future()
            # Index the user before loading, so a "joined"/"friends" event that arrives while
            # the queries run is kept (merged below) rather than lost.
            self.sessions[user_id] = []
            groups = self.user_groups.setdefault(user_id, set())
            friends = self.user_friends.setdefault(user_id, set())
            try:
                loaded_groups, loaded_friends = await self._relations.load(user_id)
                groups |= loaded_groups
                friends |= loaded_friends
                for group_id in groups:
                    self.group_members.setdefault(group_id, set()).add(user_id)
            except BaseException:
                if not self.sessions.get(user_id):
                    self._forget(user_id)
                raise
            finally:
                del self._loading[user_id]
                loading.set_result(None)
            self.sessions.setdefault(user_id, []).append(session)
            self.broker.mark_online(user_id, True)
            self._announce(user_id, online=True)
            return
        self.sessions.setdefault(user_id, []).append(session)

    def detach(self, session: Recipient) -> None:
        user_id = session.user_id
        sessions = self.sessions.get(user_id)
        if not sessions or session not in sessions:
            return
        sessions.remove(session)
        if not session.v2 and user_id in self._dirty_cursors:
            # Stored now, not within the next maintenance round, and told to the other
            # processes: the client may reconnect to one of them at once, which must know what
            # this one wrote to it.
            self._dirty_cursors.discard(user_id)
            self._spawn(self._persist_cursor(user_id, self.legacy_cursor.get(user_id)))
            if not isinstance(self.broker, MemoryBroker):
                self.publish(Envelope(b"", user_ids=(user_id,), control="cursor",
                                      message_id=self.legacy_cursor.get(user_id, 0)))
        if sessions or user_id in self._loading:
            return
        self._forget(user_id)
        self.broker.mark_online(user_id, False)
        friends = tuple(self.user_friends.pop(user_id, ()))
        if friends and isinstance(self.broker, MemoryBroker):
            self._announce(user_id, online=False, friends=friends)
        elif friends:
            # Another process may still hold a session of the user: then nobody is told.
            self._spawn(self._announce_offline(user_id, friends))

    async def _announce_offline(self, user_id: int, friends: tuple[int, ...]) -> None:
        elsewhere = await self.broker.online_elsewhere([user_id])
        if user_id not in self.sessions and not elsewhere:  # nor back here meanwhile
            self._announce(user_id, online=False, friends=friends)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _leave(self, group_id: int, user_id: int) -> None:
        self.user_groups.get(user_id, set()).discard(group_id)
        members = self.group_members.get(group_id)
        if members is not None:
            members.discard(user_id)
            if not members:
                del self.group_members[group_id]

    def _forget(self, user_id: int) -> None:
        self.sessions.pop(user_id, None)
        for group_id in self.user_groups.pop(user_id, ()):
            members = self.group_members.get(group_id)
            if members is not None:
                members.discard(user_id)
                if not members:
                    del self.group_members[group_id]

    def is_online(self, user_id: int) -> bool:
        """Whether the user has a session in this process (see online_among for all)."""
        return user_id in self.sessions

    async def online_among(self, user_ids: list[int]) -> set[int]:
        """Which of `user_ids` have a session here or in another process."""
        here = {user_id for user_id in user_ids if user_id in self.sessions}
        rest = [user_id for user_id in user_ids if user_id not in here]
        return here | await self.broker.online_elsewhere(rest) if rest else here

    async def online_friends(self, user_id: int) -> list[int]:
        return sorted(await self.online_among(list(self.user_friends.get(user_id, ()))))

    def _announce(self, user_id: int, online: bool, friends: tuple[int, ...] | None = None
                  ) -> None:
        if friends is None:
            friends = tuple(self.user_friends.get(user_id, ()))
        if friends:
            payload = encode({"cmd": CMD_PRESENCE, "userid": user_id, "online": int(online)})
            self.publish(Envelope(payload, user_ids=friends, v2_only=True))

    def advance_legacy_cursor(self, user_id: int, message_id: int) -> None:
        if message_id > self.legacy_cursor.get(user_id, 0):
            self.legacy_cursor[user_id] = message_id
            self._dirty_cursors.add(user_id)
            self._quiet_cursors.discard(user_id)
            if not isinstance(self.broker, MemoryBroker):
                # Told to the other processes as it moves, not only when the connection
                # closes: an article client that reconnects at once may land on another process
                # before this one has seen its close, and must not be pushed this message again.
                self.publish(Envelope(b"", user_ids=(user_id,), control="cursor",
                                      message_id=message_id))

    # -- what services call after commit ----------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        self.broker.publish(envelope)

    def member_joined(self, group_id: int, user_id: int) -> None:
        self.publish(Envelope(b"", user_ids=(user_id,), group_id=group_id, control="joined"))

    def member_left(self, group_id: int, user_id: int) -> None:
        """The user left or was removed: their sessions stop getting the group's messages (on
        every process) and may no longer post there."""
        self.publish(Envelope(b"", user_ids=(user_id,), group_id=group_id, control="left"))

    def group_dissolved(self, group_id: int) -> None:
        """The group is gone: nobody gets or posts its messages any more."""
        self.publish(Envelope(b"", group_id=group_id, control="dissolved"))

    def friendship_added(self, user_id: int, friend_id: int) -> None:
        self.publish(Envelope(b"", user_ids=(user_id, friend_id), control="friends"))

    def mute_changed(self, user_id: int, cmd: int, peer_id: int, muted: bool) -> None:
        """Tell the user's v2 devices that a conversation was muted or unmuted."""
        payload = encode({"cmd": CMD_MUTE, "tcmd": cmd, "dstid": peer_id, "muted": int(muted)})
        self.publish(Envelope(payload, user_ids=(user_id,), v2_only=True))
    def friendship_removed(self, user_id: int, friend_id: int) -> None:
        """The two are no longer friends: no more presence or messages between them."""
        self.publish(Envelope(b"", user_ids=(user_id, friend_id), control="unfriended"))

    def session_ended(self, user_id: int, token_hash: str | None) -> None:
        """Close the user's sockets opened with that token (all of them when None)."""
        self.publish(Envelope((token_hash or "").encode(), user_ids=(user_id,), control="ended"))

    # -- after a gap in what the broker carried ---------------------------------------------

    def resync(self, since: int) -> None:
        """The broker may have lost messages above `since`: every session here catches up from
        there (v2: told to sync; v1: pushed what it has not had), and the group and friend
        index is reloaded, as a lost "joined" would otherwise keep a member from live messages."""
        frame = encode_text_frame(encode({"cmd": CMD_RESYNC, "since": since}))
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.resync(since, frame)
        self._spawn(self._reload_index())

    async def _reload_index(self, chunk: int = 500) -> None:
        users = list(self.sessions)
        # Joins that arrive while the queries run: kept even if a query read before them.
        self._joins_while_reloading = set()
        try:
            for start in range(0, len(users), chunk):
                part = users[start:start + chunk]
                loaded: dict[int, set[int]] = {user_id: set() for user_id in part}
                for user_id, peer, is_group in await relations.groups_and_friends_of(part):
                    if user_id not in self.sessions:
                        continue
                    if is_group:
                        loaded[user_id].add(peer)
                        self.user_groups.setdefault(user_id, set()).add(peer)
                        self.group_members.setdefault(peer, set()).add(user_id)
                    else:
                        self.user_friends.setdefault(user_id, set()).add(peer)
                self._drop_lost_leaves(loaded)
        except Exception:
            log.exception("reloading the group and friend index after a resync failed")
        finally:
            self._joins_while_reloading = None

    def _drop_lost_leaves(self, loaded: dict[int, set[int]]) -> None:
        """Groups the index holds for a user that the database no longer does: a "left" or
        "dissolved" lost in the gap would otherwise keep a removed member receiving."""
        joined = self._joins_while_reloading or set()
        for user_id, groups in loaded.items():
            for group_id in self.user_groups.get(user_id, set()) - groups:
                if (user_id, group_id) not in joined:
                    self._leave(group_id, user_id)

    # -- delivery (the broker calls this on every node) -------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        if envelope.control:
            self._control(envelope)
            return
        targets = (self.group_members.get(envelope.group_id, ()) if envelope.group_id
                   else envelope.user_ids)
        # This loop runs once per recipient of every message (a thousand times for a group
        # message): the envelope's fields are read once, and a v1 user's cursor moves once
        # per envelope rather than once per socket.
        frame: bytes | None = None
        sessions_by_user = self.sessions
        skip, v2_only, message_id = envelope.skip_session, envelope.v2_only, envelope.message_id
        legacy, legacy_frame = envelope.legacy_payload, b""
        pushed = 0
        for user_id in targets:
            sessions = sessions_by_user.get(user_id)
            if not sessions:
                continue
            written_v1 = False
            for session in sessions:
                if session.sid == skip or (v2_only and not session.v2):
                    continue
                if legacy and not session.v2:
                    legacy_frame = legacy_frame or encode_text_frame(legacy)
                    written_v1 = session.push(legacy_frame, message_id) or written_v1
                    continue
                if frame is None:
                    frame = encode_text_frame(envelope.payload)
                if session.push(frame, message_id) and not session.v2:
                    written_v1 = True
                pushed += 1
            if written_v1 and message_id:
                self.advance_legacy_cursor(user_id, message_id)
        if message_id:
            self.delivered += pushed

    def _control(self, envelope: Envelope) -> None:
        if envelope.control == "joined":
            user_id = envelope.user_ids[0]
            if self._joins_while_reloading is not None:
                self._joins_while_reloading.add((user_id, envelope.group_id))
            if user_id in self.sessions:
                self.user_groups.setdefault(user_id, set()).add(envelope.group_id)
                self.group_members.setdefault(envelope.group_id, set()).add(user_id)
        elif envelope.control == "left":
            self._leave(envelope.group_id, envelope.user_ids[0])
        elif envelope.control == "dissolved":
            for user_id in list(self.group_members.get(envelope.group_id, ())):
                self._leave(envelope.group_id, user_id)
        elif envelope.control == "friends":
            a, b = envelope.user_ids
            for user_id, friend_id in ((a, b), (b, a)):
                if user_id in self.sessions:
                    self.user_friends.setdefault(user_id, set()).add(friend_id)
                    # The new friend's presence, online or not: it also tells v2 clients that
                    # their friend list changed.
                    payload = encode({"cmd": CMD_PRESENCE, "userid": friend_id,
                                      "online": int(friend_id in self.sessions)})
                    self.deliver(Envelope(payload, user_ids=(user_id,), v2_only=True))
        elif envelope.control == "unfriended":
            a, b = envelope.user_ids
            self.user_friends.get(a, set()).discard(b)
            self.user_friends.get(b, set()).discard(a)
        elif envelope.control == "cursor":
            user_id = envelope.user_ids[0]
            if envelope.message_id > self.legacy_cursor.get(user_id, 0):
                self.legacy_cursor[user_id] = envelope.message_id
                self._quiet_cursors.discard(user_id)
        elif envelope.control == "ended":
            token_hash = envelope.payload.decode()
            for session in list(self.sessions.get(envelope.user_ids[0], ())):
                if not token_hash or session.token_hash == token_hash:
                    session.close(CLOSE_SESSION_ENDED, "session ended")
