"""Downloads of stored files (/resource/<name>): byte ranges for players that seek (206,
Content-Range, 416 beyond the file, the whole file without a Range), with the download's
safety headers on every answer; and who may download what (the readers of a message that
refers to the file, its uploaders, and anyone signed in for avatars and group icons)."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from app.chat.wire import CMD_ACK, CMD_ERROR
from app.service.downloads import ByteRange, byte_range
from app.util.errors import RangeNotSatisfiable
from tests.factories import (
    befriend,
    close_all,
    connect,
    make_group,
    png_bytes,
    recv_until,
    register,
)

SAFETY = {"x-content-type-options": "nosniff",
          "content-security-policy": "default-src 'none'; sandbox"}


def clip(size: int) -> bytes:
    """A voice clip (by its Ogg magic) of `size` bytes; random, so every offset differs."""
    return b"OggS" + os.urandom(size - 4)


async def upload(user, data: bytes, name: str = "clip.ogg") -> str:
    body = (await user.client.post("/attach/upload", files={"file": (name, data)})).json()
    assert body["code"] == 0, body
    return body["data"]


def assert_safe(response: httpx.Response) -> None:
    for header, value in SAFETY.items():
        assert response.headers[header] == value, (header, response.headers)
    assert response.headers["content-disposition"].startswith("attachment")


# == byte ranges ==============================================================================

@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)),
    ("bytes=-300", (700, 999)), ("bytes=-5000", (0, 999)), ("bytes=990-5000", (990, 999)),
    ("bytes = 5 - 9", (5, 9)), ("bytes=999-999", (999, 999)),
    # Several ranges, another unit, nonsense, a backwards range: the whole file (RFC 9110).
    ("bytes=0-1,5-6", None), ("items=0-5", None), ("bytes=abc", None), ("bytes=9-5", None),
    ("bytes=-", None), ("bytes=" + "9" * 40 + "-", None)])
def test_the_range_a_header_asks_for(header, expected):
    found = byte_range(header, 1000)
    assert (found and (found.start, found.end)) == expected
    if found is not None:
        assert found.size == found.end - found.start + 1 and found.total == 1000


@pytest.mark.parametrize(("header", "total"), [("bytes=1000-", 1000), ("bytes=1500-1600", 1000),
                                               ("bytes=-0", 1000), ("bytes=0-", 0),
                                               ("bytes=-5", 0)])
def test_ranges_outside_the_file_are_not_satisfiable(header, total):
    with pytest.raises(RangeNotSatisfiable) as refused:
        byte_range(header, total)
    assert refused.value.status == 416
    assert refused.value.headers == {"Content-Range": f"bytes */{total}"}


@pytest.mark.parametrize("size", [50_000, 2_500_000])  # read whole, and streamed from disk
async def test_a_range_of_a_download_is_206_with_its_content_range(server, size):
    alice = await register(server)
    data = clip(size)
    url = await upload(alice, data)
    whole = await alice.client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(size)
    assert_safe(whole)
    for header, start, end in (("bytes=0-99", 0, 99), (f"bytes={size - 10}-", size - 10,
                                                       size - 1),
                               ("bytes=-300", size - 300, size - 1),
                               (f"bytes=1000-{size + 5000}", 1000, size - 1)):
        part = await alice.client.get(url, headers={"Range": header})
        assert part.status_code == 206, (header, part.status_code)
        assert part.content == data[start:end + 1], header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert part.headers["content-length"] == str(end - start + 1)
        assert part.headers["content-type"] == "audio/ogg"
        assert_safe(part)
    await close_all(alice)


async def test_a_range_beyond_the_file_is_416_in_the_envelope(server):
    alice = await register(server)
    data = clip(5000)
    url = await upload(alice, data)
    for header in ("bytes=5000-", "bytes=9000-9999", "bytes=-0"):
        refused = await alice.client.get(url, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == "bytes */5000"
        assert refused.json()["code"] == -1 and refused.json()["reason"] == (
            "range_not_satisfiable")
        assert data[:100] not in refused.content
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert refused.headers["content-security-policy"].startswith("default-src 'none'")
    # Several ranges, or a range of a copy that changed since (If-Range): the whole file.
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "bytes=0-9", "If-Range": "Sat, 01 "
                                                                           "Jan 2000 00:00:00 GMT"}):
        whole = await alice.client.get(url, headers=headers)
        assert whole.status_code == 200 and whole.content == data, headers
    still = await alice.client.get(url, headers={
        "Range": "bytes=0-9", "If-Range": whole.headers["last-modified"]})
    assert still.status_code == 206 and still.content == data[:10]
    await close_all(alice)


async def test_an_audio_player_seeks_with_ranges(server):
    """What <audio> does, without a browser: `Range: bytes=0-` first (answered 206 whole,
    which tells it that it may seek), HEAD-free; then a jump to the middle, `bytes=N-`."""
    alice = await register(server)
    data = clip(3_000_000)
    url = await upload(alice, data, "meeting.ogg")
    player = {"Accept": "audio/webm,audio/ogg,audio/wav,audio/*;q=0.9,*/*;q=0.5",
              "Accept-Encoding": "identity", "Sec-Fetch-Dest": "audio"}
    first = await alice.client.get(url, headers={**player, "Range": "bytes=0-"})
    assert first.status_code == 206 and first.content == data
    assert first.headers["content-range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    assert first.headers["accept-ranges"] == "bytes"
    # A seek to 60%: the player streams from there and stops reading after a while.
    seek = len(data) * 6 // 10
    async with alice.client.stream("GET", url, headers={**player,
                                                        "Range": f"bytes={seek}-"}) as part:
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {seek}-{len(data) - 1}/{len(data)}"
        received = b""
        async for chunk in part.aiter_bytes():
            received += chunk
            if len(received) >= 200_000:
                break
    assert received[:200_000] == data[seek:seek + 200_000]
    # HEAD with a range: the same headers, no body.
    head = await alice.client.head(url, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert head.headers["content-length"] == "10"
    # The server still answers the next request on the same connection.
    assert (await alice.client.get(url, headers={"Range": "bytes=0-3"})).content == b"OggS"
    await close_all(alice)


def test_byte_range_is_what_sanic_file_helpers_take():
    part = ByteRange(5, 9, 100)
    assert (part.start, part.end, part.size, part.total) == (5, 9, 5, 100)


# == who may download ========================================================================

async def send(server, sender, cmd: int, dstid: int, **fields) -> dict:
    """Send a message over the sender's chat socket; its ack (cmd 100) or refusal (101)."""
    ws = await connect(server, sender)
    try:
        await ws.send(json.dumps({"cmd": cmd, "dstid": dstid, "cid": f"c{os.urandom(6).hex()}",
                                  **fields}))
        return await recv_until(ws, lambda f: f.get("cmd") in (CMD_ACK, CMD_ERROR))
    finally:
        await ws.close()


async def status(user, url: str) -> int:
    answer = await user.client.get(url)
    if answer.status_code == 404:
        assert answer.json()["code"] == -1 and answer.json()["reason"] == "not_found"
        assert b"\x89PNG" not in answer.content and b"RIFF" not in answer.content
    return answer.status_code


async def picture(user, color: str = "red") -> dict:
    body = (await user.client.post("/attach/upload", files={
        "file": ("p.png", png_bytes(60, 40, color))})).json()
    assert body["code"] == 0, body
    return body


async def test_a_file_sent_one_to_one_is_for_its_two_ends_only(server):
    alice, bob, eve = [await register(server) for _ in range(3)]
    await befriend(alice, bob)
    shared = await picture(alice)
    url, thumb = shared["data"], shared["thumb"]
    # Uploaded, not yet sent: its uploader only (a preview before sending).
    assert [await status(u, link) for u in (alice, bob, eve) for link in (url, thumb)] == [
        200, 200, 404, 404, 404, 404]
    ack = await send(server, alice, 10, bob.id, media=4, url=url, pic=thumb)
    assert ack["cmd"] == CMD_ACK, ack
    assert [await status(u, link) for u in (alice, bob, eve) for link in (url, thumb)] == [
        200, 200, 200, 200, 404, 404]
    # Eve, who learnt the URL, cannot link it anywhere to give herself access.
    await befriend(eve, bob)
    refused = await send(server, eve, 10, bob.id, media=4, url=url)
    assert refused["cmd"] == CMD_ERROR and refused["reason"] == "not_found", refused
    group = await make_group(eve, "eve's own")
    refused = await send(server, eve, 11, group, media=4, url=url, pic=thumb)
    assert refused["cmd"] == CMD_ERROR, refused
    for path, field in (("/user/update", "avatar"), ("/group/update", "icon")):
        answer = await eve.post(path, id=group, **{field: thumb})
        assert answer["code"] == -1 and "not uploaded or received" in answer["msg"], answer
    answer = await eve.post("/contact/createcommunity", name="eve 2", icon=url)
    assert answer["code"] == -1, answer
    assert await status(eve, url) == 404
    # A recalled message takes its file with it.
    recall_ws = await connect(server, alice)
    await recall_ws.send(json.dumps({"cmd": 110, "ref": ack["id"], "cid": "recall-1"}))
    await recv_until(recall_ws, lambda f: f.get("cmd") in (CMD_ACK, CMD_ERROR))
    await recall_ws.close()
    assert [await status(u, url) for u in (alice, bob)] == [200, 404]
    await close_all(alice, bob, eve)


async def test_a_group_file_follows_the_history_rule(server):
    owner, early, late, leaver, outsider = [await register(server) for _ in range(5)]
    group = await make_group(owner, "files team", early, leaver)
    clip_url = await upload(owner, clip(4000))
    ack = await send(server, owner, 11, group, media=3, url=clip_url)
    assert ack["cmd"] == CMD_ACK, ack
    joined = await late.post("/contact/joincommunity", dstname="files team")
    assert joined["code"] == 0
    # Members from before the message read it; one who joined after does not (as history).
    assert [await status(u, clip_url) for u in (owner, early, leaver, late, outsider)] == [
        200, 200, 200, 404, 404]
    assert (await leaver.post("/group/leave", id=group))["code"] == 0
    assert (await owner.post("/group/remove", id=group, dstid=early.id))["code"] == 0
    assert [await status(u, clip_url) for u in (owner, early, leaver)] == [200, 404, 404]
    # The same content sent again later reaches the late joiner too (any readable link).
    again = await send(server, owner, 11, group, media=3, url=clip_url)
    assert again["cmd"] == CMD_ACK
    assert await status(late, clip_url) == 200
    await close_all(owner, early, late, leaver, outsider)


async def test_avatars_and_group_icons_are_anyones_to_see(server):
    alice, bob, carol = [await register(server) for _ in range(3)]
    avatar = await picture(alice, "blue")
    assert (await alice.post("/user/update", avatar=avatar["thumb"]))["code"] == 0
    icon = await picture(bob, "green")
    group = await make_group(bob, "icons")
    assert (await bob.post("/group/update", id=group, icon=icon["thumb"]))["code"] == 0
    for viewer in (alice, bob, carol):
        assert await status(viewer, avatar["thumb"]) == 200
        assert await status(viewer, icon["thumb"]) == 200
    # The full-size picture behind the thumbnail stays its uploader's.
    assert [await status(u, avatar["data"]) for u in (alice, carol)] == [200, 404]
    # Anyone may show someone's avatar as theirs too, and sign up with a built-in one.
    assert (await carol.post("/user/update", avatar=avatar["thumb"]))["code"] == 0
    newcomer = await register(server)
    answer = await newcomer.post("/user/update", avatar="/asset/img/avatar/a1.png")
    assert answer["code"] == 0, answer
    signed_up = (await server.client().post("/user/register", data={
        "mobile": "13755550001", "passwd": "secret-pass-1", "avatar": avatar["data"]})).json()
    assert signed_up["code"] == -1, signed_up  # not public: a new account has nothing shared
    await close_all(alice, bob, carol, newcomer)


async def test_a_private_groups_icon_is_its_members_only(server):
    """Nothing shows a private group to a non-member, so neither does its icon's link; made
    public again, the icon is anyone's again; a file that is also an avatar stays anyone's."""
    owner, member, outsider = [await register(server) for _ in range(3)]
    icon = await picture(owner, "purple")
    group = await make_group(owner, "hidden-icons", member)
    updated = await owner.post("/group/update", id=group, icon=icon["thumb"], private=1)
    assert updated["code"] == 0 and updated["data"]["private"] == 1, updated
    assert [await status(u, icon["thumb"]) for u in (owner, member, outsider)] == [
        200, 200, 404]
    assert (await member.post("/group/leave", id=group))["code"] == 0
    assert await status(member, icon["thumb"]) == 404
    assert (await owner.post("/group/update", id=group, private=0))["code"] == 0
    assert [await status(u, icon["thumb"]) for u in (member, outsider)] == [200, 200]
    assert (await owner.post("/group/update", id=group, private=1))["code"] == 0
    assert await status(outsider, icon["thumb"]) == 404
    assert (await owner.post("/user/update", avatar=icon["thumb"]))["code"] == 0
    assert await status(outsider, icon["thumb"]) == 200
    await close_all(owner, member, outsider)


async def test_a_file_uploaded_again_by_another_is_theirs_to_send(server):
    alice, bob, carol = [await register(server) for _ in range(3)]
    await befriend(bob, carol)
    data = clip(3000)
    first, second = await upload(alice, data), await upload(bob, data)
    assert first == second  # stored once
    assert [await status(u, first) for u in (alice, bob, carol)] == [200, 200, 404]
    ack = await send(server, bob, 10, carol.id, media=3, url=second)
    assert ack["cmd"] == CMD_ACK, ack
    assert await status(carol, first) == 200
    await close_all(alice, bob, carol)


async def test_a_download_of_a_widely_linked_file_is_one_indexed_lookup(server):
    """The query plans: message links, avatars, icons and attachment names are looked up by
    index on both engines (no scan of the messages table)."""
    from tortoise import Tortoise

    from app.model.database import connection_name

    connection = Tortoise.get_connection(connection_name())
    sqlite = connection.capabilities.dialect == "sqlite"
    for table, column in (("im_message", "url"), ("im_user", "avatar"),
                          ("im_community", "icon"), ("im_attachment", "stored_name")):
        sql = (f"EXPLAIN QUERY PLAN SELECT id FROM {table} WHERE {column} IN (?, ?)" if sqlite
               else f"EXPLAIN SELECT id FROM {table} WHERE {column} IN (%s, %s)")
        plan = str(await connection.execute_query_dict(sql, ["/resource/a", "/resource/b"]))
        assert ("USING INDEX" in plan or "USING COVERING INDEX" in plan) if sqlite else (
            "'key': 'idx_" in plan), (table, plan)


async def test_a_message_linking_an_upload_keeps_its_place_in_order(server):
    """A linked upload is checked against the database before the message is stored; the
    text sent right after it waits its turn (it would be stored first otherwise)."""
    alice, bob = [await register(server) for _ in range(2)]
    await befriend(alice, bob)
    url = await upload(alice, clip(2000))
    ws = await connect(server, alice)
    frames = [{"cmd": 10, "dstid": bob.id, "media": 3, "url": url, "cid": "voice-1"},
              {"cmd": 10, "dstid": bob.id, "media": 1, "content": "listen", "cid": "text-1"},
              {"cmd": 10, "dstid": bob.id, "media": 3, "url": url, "cid": "voice-2"},
              {"cmd": 10, "dstid": bob.id, "media": 1, "content": "again", "cid": "text-2"}]
    for frame in frames:
        await ws.send(json.dumps(frame))
    acks = {}
    while len(acks) < len(frames):
        ack = await recv_until(ws, lambda f: f.get("cmd") in (CMD_ACK, CMD_ERROR))
        assert ack["cmd"] == CMD_ACK, ack
        acks[ack["cid"]] = ack["id"]
    await ws.close()
    assert [acks[frame["cid"]] for frame in frames] == sorted(acks.values()), acks
    await close_all(alice, bob)
