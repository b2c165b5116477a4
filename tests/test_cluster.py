"""Two imchat nodes sharing one database and the Redis at 127.0.0.1:6379: a user on one node
chats with a user on the other (the `redis` broker)."""

from __future__ import annotations

import json
import os
import socket
import uuid

import pytest

from tests.factories import befriend, close_all, connect, make_group, recv_until, register
from tests.harness import make_settings, start_server

REDIS_URL = os.environ.get("IMCHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_available() -> bool:
    host, port = "127.0.0.1", 6379
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_settings(tmp_path):
    if not redis_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Redis at 127.0.0.1:6379 is unreachable")
        pytest.skip("cluster tests skipped: no Redis at 127.0.0.1:6379")
    # A stream of its own: other test runs share this Redis.
    return make_settings(tmp_path, "sqlite", broker={
        "kind": "redis", "url": REDIS_URL, "stream_key": f"imchat-test:{uuid.uuid4().hex}"})


@pytest.fixture
async def two_nodes(redis_settings):
    """Two apps in this process on the same SQLite file and Redis stream; the stream and its
    presence keys are removed afterwards."""
    import redis.asyncio as redis

    node_a = await start_server(redis_settings)
    node_b = await start_server(redis_settings)
    try:
        yield node_a, node_b
    finally:
        await node_b.stop()
        await node_a.stop()
        client = redis.from_url(REDIS_URL)
        stream = redis_settings.broker.stream_key
        await client.delete(stream, f"{stream}:nodes")
        await client.aclose()


async def test_two_nodes_deliver_to_each_other_through_redis(two_nodes, redis_settings):
    """Node B runs as a second app in this process on the same SQLite file."""
    import redis.asyncio as redis

    node_a, node_b = two_nodes
    client = redis.from_url(REDIS_URL)
    try:
        a = await register(node_a)
        b = await register(node_b)
        c = await register(node_b)
        await befriend(a, b)
        group_id = await make_group(a, "cluster-group", b, c)
        wa = await connect(node_a, a)
        wb = await connect(node_b, b)
        wc = await connect(node_b, c, v2=False)
        await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": "across"}))
        got = await recv_until(wb, lambda f: f.get("cmd") == 10)
        assert got["content"] == "across" and got["userid"] == a.id
        await wb.send(json.dumps({"cmd": 11, "dstid": group_id, "media": 1, "content": "all"}))
        assert (await recv_until(wa, lambda f: f.get("cmd") == 11))["content"] == "all"
        # (the article's client was pushed the group's join notices first, as text lines)
        assert (await recv_until(wc, lambda f: f.get("cmd") == 11 and f["content"] == "all")
                )["userid"] == b.id

        # Whatever else lands on the stream is ignored, and the nodes carry on.
        stream = redis_settings.broker.stream_key
        for number, junk in enumerate((b"not json", b'{"n": "x"}', b"[]", b'[1, "two"]',
                                       b'[{"n": "elsewhere", "p": 5}]', b'[{"p": "x"}]')):
            await client.xadd(stream, {"n": "elsewhere", "s": number + 1, "b": junk})
        await client.xadd(stream, {"no": "fields"})
        await client.xadd(stream, {"n": "other", "s": "x", "b": "[]"})
        # A burst crosses as batches and arrives whole and in order.
        for n in range(15):  # within the rate limit of a fresh connection
            await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": f"b{n}"}))
        burst = [(await recv_until(wb, lambda f: f.get("cmd") == 10))["content"]
                 for _ in range(15)]
        assert burst == [f"b{n}" for n in range(15)]
        for ws in (wa, wb, wc):
            await ws.close()
        await close_all(a, b, c)
    finally:
        await client.aclose()


def test_several_workers_need_the_redis_broker(tmp_path):
    from app.settings import SettingsError

    with pytest.raises(SettingsError, match="broker.kind"):
        make_settings(tmp_path, "sqlite", server={"workers": 2})
    assert make_settings(tmp_path, "sqlite", server={"workers": 2},
                         broker={"kind": "redis"}).server.workers == 2


async def test_an_outbox_overflow_makes_the_other_node_resync(two_nodes):
    """Node A drops envelopes it cannot keep (its outbox is full while Redis is away; here the
    limit is set to nothing): its next batch says so, and node B tells its v2 client to sync
    from before the dropped message (cmd 108) and pushes it to its v1 client, once."""
    node_a, node_b = two_nodes
    a = await register(node_a)
    b = await register(node_b)
    c = await register(node_b)
    await befriend(a, b)
    await befriend(a, c)
    wa = await connect(node_a, a)
    wb = await connect(node_b, b)
    wc = await connect(node_b, c, v2=False)
    broker_a = node_a.app.ctx.hub.broker
    broker_a.max_pending = 0
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": "dropped"}))
    await wa.send(json.dumps({"cmd": 10, "dstid": c.id, "media": 1, "content": "dropped v1"}))
    dropped = [(await recv_until(wa, lambda f: f.get("cmd") == 100))["id"] for _ in range(2)]
    assert broker_a.dropped >= 2
    broker_a.max_pending = 100_000
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 1, "content": "after"}))
    resync = await recv_until(wb, lambda f: f.get("cmd") == 108)
    assert resync["since"] < dropped[0]
    await wb.send(json.dumps({"cmd": 106, "since": resync["since"]}))
    synced = await recv_until(wb, lambda f: f.get("cmd") == 10 and f["id"] == dropped[0])
    assert synced["content"] == "dropped"
    pushed = await recv_until(wc, lambda f: f.get("cmd") == 10)
    assert pushed["id"] == dropped[1] and pushed["content"] == "dropped v1"
    for ws in (wa, wb, wc):
        await ws.close()
    await close_all(a, b, c)


async def test_a_removal_on_one_node_stops_delivery_on_the_other(two_nodes):
    """The owner removes Carol through node A; her sockets on node B get the notice (v2) and
    its text line (v1), then none of the group's messages, and may no longer post there."""
    from tests.factories import assert_silent

    node_a, node_b = two_nodes
    owner, bob, carol = await register(node_a), await register(node_b), await register(node_b)
    group_id = await make_group(owner, "cluster-gov-" + uuid.uuid4().hex[:6], bob, carol)
    carol_phone = await connect(node_b, carol)
    carol_desk = await connect(node_b, carol, v2=False)
    bob_phone = await connect(node_b, bob)
    assert (await owner.post("/group/remove", id=group_id, dstid=carol.id))["code"] == 0
    told = await recv_until(carol_phone, lambda f: f.get("media") == 120)
    assert (told["memo"], told["amount"]) == ("removed", carol.id)
    line = await recv_until(carol_desk, lambda f: f.get("id") == told["id"])
    assert line["media"] == 1 and line["content"].endswith("from the group")
    await bob_phone.send(json.dumps({"cmd": 11, "dstid": group_id, "media": 1,
                                     "content": "after", "cid": "after-1"}))
    await recv_until(bob_phone, lambda f: f.get("cmd") == 100)
    await assert_silent(carol_phone, 0.5)
    await assert_silent(carol_desk, 0.2)
    await carol_phone.send(json.dumps({"cmd": 11, "dstid": group_id, "media": 1,
                                       "content": "still here?", "cid": "late-1"}))
    refusal = await recv_until(carol_phone, lambda f: f.get("cmd") == 101)
    assert refusal["reason"] == "forbidden"
    for ws in (carol_phone, carol_desk, bob_phone):
        await ws.close()
    await close_all(owner, bob, carol)


async def test_a_group_dissolved_from_the_console_on_one_node_ends_on_the_other(two_nodes):
    """An administrator on node A dissolves a group from the console; Bob's socket on node B is
    told at once and may no longer post there."""
    from tests.admin_helpers import make_admin

    node_a, node_b = two_nodes
    boss, owner, bob = await make_admin(node_a), await register(node_a), await register(node_b)
    group_id = await make_group(owner, "cluster-end-" + uuid.uuid4().hex[:6], bob)
    bob_phone = await connect(node_b, bob)
    assert (await boss.post(f"/admin/groups/{group_id}/dissolve"))["code"] == 0
    told = await recv_until(bob_phone, lambda f: f.get("media") == 120)
    assert (told["memo"], told["userid"], told["dstid"]) == ("dissolved", boss.id, group_id)
    await bob_phone.send(json.dumps({"cmd": 11, "dstid": group_id, "media": 1,
                                     "content": "still here?", "cid": "late-2"}))
    refusal = await recv_until(bob_phone, lambda f: f.get("cmd") == 101)
    assert (refusal["reason"], refusal["cid"]) == ("forbidden", "late-2")
    await bob_phone.close()
    await close_all(boss, owner, bob)
async def test_file_lines_and_unfriending_cross_nodes(two_nodes):
    """A file message reaches an article client on the other node as its text line; a friend
    removed on one node can no longer message from a socket on the other, at once."""
    node_a, node_b = two_nodes
    a = await register(node_a)
    b = await register(node_b)
    await befriend(a, b)
    wa = await connect(node_a, a)
    wb_v1 = await connect(node_b, b, v2=False)
    wb = await connect(node_b, b)
    # Only an upload of the sender's may be linked.
    url = (await a.client.post("/attach/upload", files={"file": ("plan.pdf", b"%PDF-1.4 " * 200)})
           ).json()["data"]
    await wa.send(json.dumps({"cmd": 10, "dstid": b.id, "media": 6, "content": "plan.pdf",
                              "url": url, "amount": 2048, "cid": "file-x"}))
    line = await recv_until(wb_v1, lambda f: f.get("cmd") == 10)
    assert (line["media"], line["content"]) == (1, f"[file] plan.pdf (2.0 KB) {url}")
    as_file = await recv_until(wb, lambda f: f.get("cmd") == 10)
    assert (as_file["media"], as_file["content"]) == (6, "plan.pdf")
    assert (await a.post("/contact/removefriend", id=b.id))["code"] == 0
    await recv_until(wb, lambda f: f.get("cmd") == 109)
    await wb.send(json.dumps({"cmd": 10, "dstid": a.id, "media": 1, "content": "hi",
                              "cid": "after"}))
    refused = await recv_until(wb, lambda f: f.get("cmd") in (100, 101))
    assert refused["cmd"] == 101 and refused["reason"] == "forbidden"
    for ws in (wa, wb, wb_v1):
        await ws.close()
    await close_all(a, b)
