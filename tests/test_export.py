"""Export: a conversation downloaded from the admin console, and `imchat export --user / --group
/ --all`, as zip archives of JSON lines and the files they refer to."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from app.model.tables import AuditEntry, Message
from app.service import export
from tests.admin_helpers import make_admin, run_cli
from tests.factories import befriend, close_all, make_group, register, send_texts
from tests.harness import start_server
from tests.test_retention import upload


def read_archive(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        lines = {name: [json.loads(line) for line in archive.read(name).decode().splitlines()]
                 for name in ("messages.jsonl", "users.jsonl", "groups.jsonl")}
        files = {name[len("files/"):]: archive.read(name) for name in names
                 if name.startswith("files/")}
        return {"names": names, "manifest": json.loads(archive.read("manifest.json")),
                "files": files, **lines}


async def chat_world(server) -> dict[str, Any]:
    """Ann and Bob talk one to one (a picture among the texts), Bob and Cat too; Ann and Bob
    share a group."""
    ann, bob, cat = [await register(server, name) for name in ("Ann", "Bob", "Cat")]
    await befriend(ann, bob)
    await befriend(cat, bob)
    group = await make_group(ann, "team", bob)
    picture = await upload(ann, "red")
    pair = await send_texts(server, ann, 10, bob.id, ["hello bob", "picture"])
    await Message.filter(id=pair[1]).update(media=4, url=picture)
    pair += await send_texts(server, bob, 10, ann.id, ["hi ann"])
    other = await send_texts(server, cat, 10, bob.id, ["cat to bob"])
    team = await send_texts(server, bob, 11, group, ["team news"])
    return {"ann": ann, "bob": bob, "cat": cat, "group": group, "picture": picture,
            "pair": pair, "other": other, "team": team}


async def test_an_admin_downloads_a_conversation_and_the_download_is_audited(server):
    world = await chat_world(server)
    ann, bob = world["ann"], world["bob"]
    boss = await make_admin(server)
    try:
        response = await boss.client.get("/admin/export", params={
            "cmd": 10, "user": ann.id, "dstid": bob.id})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="imchat-export-pair-{ann.id}-{bob.id}.zip"')
        got = read_archive(response.content)
        assert got["names"] >= {"manifest.json", "messages.jsonl", "users.jsonl",
                                "groups.jsonl"}
        assert [(m["id"], m["userid"], m["dstid"], m["content"], m["url"])
                for m in got["messages.jsonl"]] == [
            (world["pair"][0], ann.id, bob.id, "hello bob", ""),
            (world["pair"][1], ann.id, bob.id, "picture", world["picture"]),
            (world["pair"][2], bob.id, ann.id, "hi ann", "")]
        assert [(u["id"], u["mobile"]) for u in got["users.jsonl"]] == [
            (ann.id, ann.mobile), (bob.id, bob.mobile)]
        assert all("passwd_hash" not in u and "token" not in u for u in got["users.jsonl"])
        name = world["picture"].rsplit("/", 1)[1]
        served = await ann.client.get(world["picture"])
        assert got["files"] == {name: served.content}
        assert got["manifest"]["counts"] == {"messages": 3, "users": 2, "groups": 0, "files": 1}
        assert got["manifest"]["scope"] == {"kind": "pair", "ids": [ann.id, bob.id]}
        assert got["manifest"]["format"] == "imchat-export"
        entry = await AuditEntry.get(action="export")
        assert (entry.actor_id, entry.target) == (boss.id, f"pair {ann.id} {bob.id}")
    finally:
        await close_all(world["ann"], world["bob"], world["cat"], boss)


async def test_a_group_export_holds_its_messages_and_members(server):
    world = await chat_world(server)
    boss = await make_admin(server)
    try:
        response = await boss.client.get("/admin/export", params={"cmd": 11,
                                                                  "dstid": world["group"]})
        got = read_archive(response.content)
        # The group's notices (Bob joined) are messages of its log too.
        assert [m["content"] for m in got["messages.jsonl"]] == ["Bob joined the group",
                                                                 "team news"]
        assert [(g["id"], g["name"], g["members"]) for g in got["groups.jsonl"]] == [
            (world["group"], "team", sorted([world["ann"].id, world["bob"].id]))]
        assert {u["id"] for u in got["users.jsonl"]} == {world["ann"].id, world["bob"].id}
        missing = await boss.client.get("/admin/export", params={"cmd": 11, "dstid": 99999})
        assert missing.json() == {"code": -1, "msg": "no such group", "reason": "not_found"}
        bad = await boss.client.get("/admin/export", params={"cmd": 12, "dstid": 1})
        assert (bad.status_code, bad.json()["msg"]) == (
            400, "cmd must be 10 (two users) or 11 (a group)")
        assert not await AuditEntry.filter(action="export", target="group 99999").exists()
    finally:
        await close_all(world["ann"], world["bob"], world["cat"], boss)


async def test_the_export_command_writes_each_scope_with_progress(settings, tmp_path):
    server = await start_server(settings)
    try:
        world = await chat_world(server)
        await close_all(world["ann"], world["bob"], world["cat"])
    finally:
        await server.stop()
    ann = world["ann"]
    target = tmp_path / "ann.zip"
    done = run_cli(settings, "export", "--user", str(ann.id), "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"exporting 3 messages (user {ann.id})", "  messages 3/3", "  files 1",
        f"export written: {target} (3 messages, 2 users, 0 groups, 1 files)"]
    got = read_archive(target.read_bytes())
    assert [m["id"] for m in got["messages.jsonl"]] == world["pair"]
    everything = run_cli(settings, "export", "--all", "--output", str(tmp_path / "all.zip"))
    assert everything.returncode == 0, everything.stderr
    got = read_archive((tmp_path / "all.zip").read_bytes())
    # The five chat messages and the group's notice that Bob joined.
    assert len(got["messages.jsonl"]) == 6 and len(got["groups.jsonl"]) == 1
    again = run_cli(settings, "export", "--all", "--output", str(tmp_path / "all.zip"))
    assert again.returncode == 1 and "exists already" in again.stderr
    missing = run_cli(settings, "export", "--group", "999", "--output", str(tmp_path / "g.zip"))
    assert (missing.returncode, missing.stderr.splitlines()[-1]) == (
        1, "imchat: export refused: no such group")
    assert not (tmp_path / "g.zip").exists()
    assert export.Scope("user", (7,)).file_name() == "imchat-export-user-7.zip"
