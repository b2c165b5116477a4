"""Retention: old messages and unreferenced uploads are deleted by the background job when
`[retention]` asks for it (and never otherwise), with the counts logged and audited."""

from __future__ import annotations

import asyncio

from app.model.tables import Attachment, AuditEntry, Message, now_ms
from app.service import retention, uploads
from app.service.retention import RetentionJob
from app.settings import Settings
from tests.factories import befriend, close_all, png_bytes, register, send_texts
from tests.harness import make_settings, start_server

DAY_MS = 86_400_000


async def upload(user, color: str) -> str:
    response = await user.client.post("/attach/upload", files={
        "file": (f"{color}.png", png_bytes(color=color), "image/png")})
    body = response.json()
    assert body["code"] == 0, body
    return body["data"]


async def test_retention_is_off_by_default():
    assert RetentionJob(Settings()).enabled is False


async def test_messages_older_than_the_limit_are_deleted_and_the_run_audited(server):
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    await befriend(ann, bob)
    try:
        ids = await send_texts(server, ann, 10, bob.id, ["old 1", "old 2", "new 1"])
        await Message.filter(id__in=ids[:2]).update(created_ms=now_ms() - 31 * DAY_MS)
        server.settings.retention.message_days = 30
        outcome = await retention.run_once(server.settings)
        assert (outcome.messages, outcome.uploads) == (2, 0)
        history = (await ann.post("/message/history", cmd=10, dstid=bob.id))["rows"]
        assert [row["content"] for row in history] == ["new 1"]
        entry = await AuditEntry.get(action="retention")
        assert (entry.actor, entry.detail) == (
            "retention", "old messages deleted: 2; unreferenced uploads deleted: 0")
        again = await retention.run_once(server.settings)
        assert again.messages == 0
    finally:
        await close_all(ann, bob)


async def test_old_messages_are_found_beyond_one_batch(server, monkeypatch):
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    await befriend(ann, bob)
    monkeypatch.setattr(retention, "BATCH", 3)
    try:
        ids = await send_texts(server, ann, 10, bob.id, [f"m{n}" for n in range(8)])
        await Message.filter(id__in=ids[:7]).update(created_ms=now_ms() - 2 * DAY_MS)
        assert await retention.delete_old_messages(now_ms() - DAY_MS) == 7
        assert await Message.all().values_list("id", flat=True) == [ids[7]]
    finally:
        await close_all(ann, bob)


async def test_only_unreferenced_uploads_past_the_grace_period_are_deleted(server):
    ann, bob = await register(server, "Ann"), await register(server, "Bob")
    await befriend(ann, bob)
    try:
        sent, avatar, orphan, young = [await upload(ann, color)
                                       for color in ("red", "green", "blue", "white")]
        ws_ids = await send_texts(server, ann, 10, bob.id, ["picture"])
        await Message.filter(id=ws_ids[0]).update(media=4, url=sent)
        assert (await ann.post("/user/update", avatar=avatar))["code"] == 0
        old = now_ms() - 2 * DAY_MS
        await Attachment.filter(stored_name__in=[u.rsplit("/", 1)[1]
                                                 for u in (sent, avatar, orphan)]
                                ).update(created_ms=old)
        folder = server.settings.upload_path
        orphan_name = orphan.rsplit("/", 1)[1]
        assert (folder / orphan_name).is_file()
        assert (folder / uploads.thumb_name(orphan_name)).is_file()
        server.settings.retention.delete_unreferenced_uploads = True
        outcome = await retention.run_once(server.settings)
        assert (outcome.messages, outcome.uploads) == (0, 1)
        assert not (folder / orphan_name).exists()
        assert not (folder / uploads.thumb_name(orphan_name)).exists()
        left = set(await Attachment.all().values_list("stored_name", flat=True))
        assert left == {u.rsplit("/", 1)[1] for u in (sent, avatar, young)}
        for url in (sent, avatar, young):
            assert (await ann.client.get(url)).status_code == 200
    finally:
        await close_all(ann, bob)


async def test_the_server_runs_the_job_at_start_when_configured(settings, tmp_path,
                                                                db_backend, mysql_database):
    first = await start_server(settings)
    ann, bob = await register(first, "Ann"), await register(first, "Bob")
    await befriend(ann, bob)
    ids = await send_texts(first, ann, 10, bob.id, ["ancient", "recent"])
    await Message.filter(id=ids[0]).update(created_ms=now_ms() - 400 * DAY_MS)
    await close_all(ann, bob)
    await first.stop()
    configured = make_settings(tmp_path, db_backend, mysql_database,
                               retention={"message_days": 365})
    second = await start_server(configured)
    try:
        for _ in range(100):
            if await AuditEntry.filter(action="retention").exists():
                break
            await asyncio.sleep(0.05)
        assert await Message.all().values_list("id", flat=True) == [ids[1]]
        entry = await AuditEntry.get(action="retention")
        assert entry.detail == "old messages deleted: 1; unreferenced uploads deleted: 0"
    finally:
        await second.stop()
