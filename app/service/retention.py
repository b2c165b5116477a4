"""Retention: the background clean-up `[retention]` asks for (off by default). Messages older
than `message_days` are deleted, and uploaded files nothing refers to any more (no message,
avatar or group icon) once older than `upload_grace_hours`. Each run logs and audits its counts.

Both passes walk their table by primary key in batches: no index on time is needed, no table
is held locked for long, and a run over millions of rows costs memory for one batch (plus, for
uploads, the ids of the unreferenced candidates).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from tortoise.transactions import in_transaction

from app.model.database import connection_name, fetch_all
from app.model.tables import Attachment, Message, Upload, now_ms
from app.service import audit, search
from app.service.uploads import thumb_name
from app.settings import Settings
from app.util.periodic import PeriodicJob

log = logging.getLogger("imchat.retention")

BATCH = 1000
RESOURCE_PREFIX = "/resource/"


@dataclasses.dataclass
class Outcome:
    messages: int = 0
    uploads: int = 0

    def describe(self) -> str:
        return f"old messages deleted: {self.messages}; unreferenced uploads deleted: {self.uploads}"


async def delete_old_messages(older_than_ms: int) -> int:
    """Delete messages created before `older_than_ms`, oldest first; stops at the first batch
    holding a newer one (ids grow with time, so what follows is newer still)."""
    deleted, after = 0, 0
    while True:
        rows = await fetch_all("SELECT id, created_ms FROM im_message WHERE id > ? "
                               "ORDER BY id LIMIT ?", (after, BATCH))
        old = [row["id"] for row in rows if row["created_ms"] < older_than_ms]
        if old:
            # With their search index entries (made from the rows: taken out first).
            async with in_transaction(connection_name()) as connection:
                await search.unindex(connection, old)
                deleted += await Message.filter(id__in=old).using_db(connection).delete()
        if len(old) < len(rows) or len(rows) < BATCH:
            return deleted
        after = rows[-1]["id"]


def _resource_name(link: str) -> str:
    return link[len(RESOURCE_PREFIX):] if link.startswith(RESOURCE_PREFIX) else ""


async def _referenced_names(candidates: dict[str, int]) -> set[str]:
    """Which of the `candidates` (file name -> attachment id) a message, an avatar or a group
    icon still refers to. Messages are read in batches of their link columns only."""
    found: set[str] = set()
    for sql in ("SELECT avatar AS link FROM im_user WHERE avatar <> ''",
                "SELECT icon AS link FROM im_community WHERE icon <> ''"):
        found.update(_resource_name(row["link"]) for row in await fetch_all(sql))
    after = 0
    while True:
        rows = await fetch_all("SELECT id, url, pic FROM im_message WHERE id > ? AND "
                               "(url <> '' OR pic <> '') ORDER BY id LIMIT ?", (after, BATCH))
        for row in rows:
            found.add(_resource_name(row["url"]))
            found.add(_resource_name(row["pic"]))
        if len(rows) < BATCH:
            return found & set(candidates)
        after = rows[-1]["id"]


async def delete_unreferenced_uploads(upload_dir: Path, uploaded_before_ms: int) -> int:
    """Delete uploads made before `uploaded_before_ms` that nothing refers to: their files (and
    thumbnails), then their rows. A file referred to by its thumbnail alone is kept."""
    candidates: dict[str, int] = {}
    for record in await Attachment.filter(created_ms__lt=uploaded_before_ms).only(
            "id", "stored_name"):
        candidates[record.stored_name] = record.id
        candidates[thumb_name(record.stored_name)] = record.id
    referenced = await _referenced_names(candidates)
    keep = {candidates[name] for name in referenced}
    doomed = {name: ident for name, ident in candidates.items() if ident not in keep}
    for name in doomed:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread((upload_dir / name).unlink)
    ids = sorted(set(doomed.values()))
    for start in range(0, len(ids), BATCH):
        await Upload.filter(attachment_id__in=ids[start:start + BATCH]).delete()
        await Attachment.filter(id__in=ids[start:start + BATCH]).delete()
    return len(ids)


async def run_once(settings: Settings) -> Outcome:
    """One clean-up as configured; logged and recorded in the audit log."""
    policy, outcome, now = settings.retention, Outcome(), now_ms()
    if policy.message_days > 0:
        outcome.messages = await delete_old_messages(now - policy.message_days * 86_400_000)
    if policy.delete_unreferenced_uploads:
        outcome.uploads = await delete_unreferenced_uploads(
            settings.upload_path, now - policy.upload_grace_hours * 3_600_000)
    log.info("retention: %s", outcome.describe())
    await audit.record(audit.RETENTION, actor_name="retention", detail=outcome.describe())
    return outcome


class RetentionJob:
    """The background task of one server process: a run at start, then every
    `retention.interval_hours`; nothing at all when retention is off."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        policy = settings.retention
        self._job = PeriodicJob(
            "retention", lambda: run_once(settings), policy.interval_hours * 3600, at_start=True,
            failure=f"the retention clean-up failed; it runs again in {policy.interval_hours:g} hours")

    @property
    def enabled(self) -> bool:
        policy = self.settings.retention
        return policy.message_days > 0 or policy.delete_unreferenced_uploads

    def start(self) -> None:
        if self.enabled:
            self._job.start()

    async def stop(self) -> None:
        await self._job.stop()
