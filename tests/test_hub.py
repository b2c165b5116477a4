"""The hub without a server: a real SQLite database, the memory broker, and recipients that
record what the hub asks of them (the hub's whole view of a session is app.chat.hub's
`Recipient`). Fan-out by group index, multi-device delivery, v2-only frames, the sender's own
session skipped, joins and friendships in step, presence to friends, v1 cursors, ends."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.chat.broker import Envelope, MemoryBroker
from app.chat.hub import Hub
from app.chat.wire import CLOSE_SESSION_ENDED, CMD_PRESENCE
from app.model.database import close_database, open_database
from app.model.tables import Community, Friendship, Membership, User
from tests.harness import make_settings

_sids = itertools.count(1)


@dataclasses.dataclass(eq=False)
class Device:
    """A session as the hub sees it, keeping what it was sent."""

    user_id: int
    v2: bool = True
    token_hash: str = "t"
    expires_ms: int = 2**62
    sid: int = dataclasses.field(default_factory=lambda: next(_sids))
    frames: list[dict] = dataclasses.field(default_factory=list)
    closed: tuple[int, str] | None = None

    def push(self, frame: bytes, message_id: int) -> bool:
        # A server text frame: 2-byte header for short payloads, 4 for up to 64 KiB.
        payload = frame[2:] if frame[1] < 126 else frame[4:]
        self.frames.append(json.loads(payload))
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def resync(self, since: int, frame: bytes) -> None:
        self.push(frame, 0)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    await open_database(make_settings(tmp_path, "sqlite"))
    running = Hub(MemoryBroker(), check_every=3600)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        await close_database()


async def _user(mobile: str) -> User:
    return await User.create(mobile=mobile, passwd_hash="x", nickname=mobile)


async def test_group_fan_out_reaches_every_device_of_members_only(hub: Hub) -> None:
    alice, bob, carol = [await _user(m) for m in ("alice", "bob", "carol")]
    group = await Community.create(name="g", owner=alice)
    for member in (alice, bob):
        await Membership.create(community=group, user=member)
    alice_phone, alice_desk = Device(alice.id), Device(alice.id, v2=False)
    bob_phone, carol_phone = Device(bob.id), Device(carol.id)
    for device in (alice_phone, alice_desk, bob_phone, carol_phone):
        await hub.attach(device)
    message = json.dumps({"cmd": 11, "dstid": group.id, "content": "hi"}).encode()
    hub.publish(Envelope(message, group_id=group.id, message_id=7, skip_session=alice_phone.sid))
    assert [f["content"] for f in alice_desk.frames if f.get("cmd") == 11] == ["hi"]
    assert [f["content"] for f in bob_phone.frames if f.get("cmd") == 11] == ["hi"]
    assert not [f for f in alice_phone.frames if f.get("cmd") == 11]  # the sender's own socket
    assert not [f for f in carol_phone.frames if f.get("cmd") == 11]  # not a member
    assert hub.legacy_cursor[alice.id] == 7  # written to a v1 connection of hers

    # Carol joins: from the next message on she is in the index.
    await Membership.create(community=group, user=carol)
    hub.member_joined(group.id, carol.id)
    hub.publish(Envelope(message, group_id=group.id, message_id=8))
    assert [f["content"] for f in carol_phone.frames if f.get("cmd") == 11] == ["hi"]
    # v2-only frames skip the article's clients.
    hub.publish(Envelope(b'{"cmd":103}', group_id=group.id, v2_only=True))
    assert not [f for f in alice_desk.frames if f.get("cmd") == 103]
    assert [f for f in bob_phone.frames if f.get("cmd") == 103]


async def test_presence_goes_to_friends_and_sessions_end_by_token(hub: Hub) -> None:
    alice, bob, carol = [await _user(m) for m in ("alice", "bob", "carol")]
    await Friendship.create(owner=alice, friend=bob)
    await Friendship.create(owner=bob, friend=alice)
    bob_phone, carol_phone = Device(bob.id), Device(carol.id)
    await hub.attach(bob_phone)
    await hub.attach(carol_phone)
    alice_old, alice_new = Device(alice.id, token_hash="old"), Device(alice.id, token_hash="new")
    await hub.attach(alice_old)
    await hub.attach(alice_new)
    came = [f for f in bob_phone.frames if f.get("cmd") == CMD_PRESENCE]
    assert came == [{"cmd": CMD_PRESENCE, "userid": alice.id, "online": 1}]  # once, not per device
    assert not [f for f in carol_phone.frames if f.get("cmd") == CMD_PRESENCE]
    assert await hub.online_friends(bob.id) == [alice.id]

    hub.session_ended(alice.id, "old")
    assert alice_old.closed == (CLOSE_SESSION_ENDED, "session ended") and alice_new.closed is None
    hub.detach(alice_old)
    assert len([f for f in bob_phone.frames if f.get("cmd") == CMD_PRESENCE]) == 1  # still on
    hub.detach(alice_new)
    went = [f for f in bob_phone.frames if f.get("cmd") == CMD_PRESENCE][-1]
    assert went == {"cmd": CMD_PRESENCE, "userid": alice.id, "online": 0}
    assert not hub.is_online(alice.id) and alice.id not in hub.user_friends


async def test_v1_cursors_of_users_gone_are_stored_then_forgotten(hub: Hub) -> None:
    alice, bob = await _user("alice"), await _user("bob")
    alice_desk, bob_desk = Device(alice.id, v2=False), Device(bob.id, v2=False)
    for device in (alice_desk, bob_desk):
        await hub.attach(device)
    hub.advance_legacy_cursor(alice.id, 11)
    hub.advance_legacy_cursor(bob.id, 12)
    hub.detach(alice_desk)
    await hub.persist_cursors()
    hub.prune_cursors()  # a first round only notes that alice's cursor is quiet
    assert hub.legacy_cursor == {alice.id: 11, bob.id: 12}
    hub.prune_cursors()
    assert hub.legacy_cursor == {bob.id: 12}  # bob is still connected
    assert (await User.get(id=alice.id)).legacy_delivered_id == 11
    # Alice's next v1 connection starts from the stored cursor.
    assert await hub.load_legacy_cursor(alice.id) == 11
