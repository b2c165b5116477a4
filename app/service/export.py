"""Export: chat history as a portable archive, for `imchat export` and the admin console.

The archive is a zip file holding JSON lines (UTF-8, one object per line) and the files:

    manifest.json     {"format": "imchat-export", "version": 1, "scope": ..., "created_ms",
                       "counts": {"messages", "users", "groups", "files"}, "imchat": version}
    messages.jsonl    the article's message JSON plus cid and createat, oldest first
    users.jsonl       every user a message or group refers to (no password, no token)
    groups.jsonl      the groups in scope, each with its member ids
    files/<name>      the uploads messages and avatars refer to (as /resource/<name>)

Scopes: one user (their one-to-one conversations, both sides, and what they sent in groups),
one group (everything said in it), one conversation between two users, or everything.
Messages are read by id in batches, so memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import ujson

from app.model.database import fetch_all
from app.model.tables import Community, Membership, User, now_ms
from app.service import audit
from app.service.retention import RESOURCE_PREFIX
from app.util.errors import NotFound

BATCH = 1000
CHUNK = 256 * 1024
FORMAT = "imchat-export"
VERSION = 1

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Scope:
    kind: str  # "user", "group", "pair" or "all"
    ids: tuple[int, ...] = ()

    def where(self) -> tuple[str, tuple[int, ...]]:
        """The SQL condition on im_message for this scope, and its values."""
        if self.kind == "user":
            (user,) = self.ids
            return ("((cmd = 10 AND (sender_id = ? OR dst_user_id = ?)) OR "
                    "(cmd = 11 AND sender_id = ?))", (user, user, user))
        if self.kind == "group":
            return "community_id = ?", self.ids
        if self.kind == "pair":
            a, b = self.ids
            return ("(cmd = 10 AND ((sender_id = ? AND dst_user_id = ?) OR "
                    "(sender_id = ? AND dst_user_id = ?)))", (a, b, b, a))
        return "1 = 1", ()

    def describe(self) -> str:
        return f"{self.kind} {' '.join(map(str, self.ids))}".strip()

    def file_name(self) -> str:
        return f"imchat-export-{self.kind}{''.join('-' + str(i) for i in self.ids)}.zip"


@dataclasses.dataclass
class Counts:
    messages: int = 0
    users: int = 0
    groups: int = 0
    files: int = 0


async def check_scope(scope: Scope) -> None:
    """NotFound unless every id of the scope names a user (or the group) that exists."""
    if scope.kind == "group":
        if not await Community.filter(id=scope.ids[0]).exists():
            raise NotFound("no such group")
    elif scope.ids and await User.filter(id__in=scope.ids).count() != len(set(scope.ids)):
        raise NotFound("no such user")


def _message_json(row: dict[str, Any]) -> dict[str, Any]:
    single = row["cmd"] == 10
    return {"id": row["id"], "cmd": row["cmd"], "userid": row["sender_id"],
            "dstid": row["dst_user_id"] if single else row["community_id"],
            "media": row["media"], "content": row["content"], "pic": row["pic"],
            "url": row["url"], "memo": row["memo"], "amount": row["amount"], "cid": row["cid"],
            "createat": row["created_ms"]}


def _line(obj: dict[str, Any]) -> bytes:
    return (ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False) + "\n").encode()


def _resource(link: str) -> str:
    name = link[len(RESOURCE_PREFIX):] if link.startswith(RESOURCE_PREFIX) else ""
    # Only a plain file name: nothing a message holds may name a path outside the folder.
    return name if name and "/" not in name and "\\" not in name and name[0] != "." else ""


class _Archive:
    """The zip being written, one entry at a time; blocking writes run in a thread."""

    def __init__(self, target: Path | IO[bytes]) -> None:
        self.zip = zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED)
        self.user_ids: set[int] = set()
        self.files: set[str] = set()

    async def write_lines(self, name: str, batches: AsyncIterator[list[bytes]]) -> None:
        entry = await asyncio.to_thread(self.zip.open, name, "w")
        try:
            async for lines in batches:
                await asyncio.to_thread(entry.write, b"".join(lines))
        finally:
            await asyncio.to_thread(entry.close)

    async def close(self) -> None:
        await asyncio.to_thread(self.zip.close)


async def _messages(archive: _Archive, scope: Scope, counts: Counts, progress: Progress
                    ) -> AsyncIterator[list[bytes]]:
    condition, values = scope.where()
    total = (await fetch_all(f"SELECT COUNT(*) AS n FROM im_message WHERE {condition}",
                             values))[0]["n"]
    progress(f"exporting {total} messages ({scope.describe()})")
    after = 0
    while True:
        rows = await fetch_all(f"SELECT * FROM im_message WHERE {condition} AND id > ? "
                               "ORDER BY id LIMIT ?", (*values, after, BATCH))
        if not rows:
            return
        for row in rows:
            archive.user_ids.add(row["sender_id"])
            if row["dst_user_id"]:
                archive.user_ids.add(row["dst_user_id"])
            archive.files.update(filter(None, (_resource(row["url"]), _resource(row["pic"]))))
        counts.messages += len(rows)
        progress(f"  messages {counts.messages}/{total}")
        yield [_line(_message_json(row)) for row in rows]
        after = rows[-1]["id"]


async def _groups(archive: _Archive, scope: Scope, counts: Counts
                  ) -> AsyncIterator[list[bytes]]:
    if scope.kind not in ("group", "all"):
        return
    query = Community.all() if scope.kind == "all" else Community.filter(id=scope.ids[0])
    for group in await query.order_by("id"):
        members = await Membership.filter(community_id=group.id).order_by("user_id").values_list(
            "user_id", flat=True)
        archive.user_ids.update(members)
        archive.user_ids.add(group.owner_id)
        archive.files.update(filter(None, (_resource(group.icon),)))
        counts.groups += 1
        yield [_line({"id": group.id, "name": group.name, "ownerid": group.owner_id,
                      "icon": group.icon, "memo": group.memo, "cate": group.cate,
                      "createat": group.created_ms, "members": list(members)})]


async def _users(archive: _Archive, counts: Counts) -> AsyncIterator[list[bytes]]:
    ids = sorted(archive.user_ids)
    for start in range(0, len(ids), BATCH):
        users = await User.filter(id__in=ids[start:start + BATCH]).order_by("id")
        counts.users += len(users)
        archive.files.update(filter(None, (_resource(user.avatar) for user in users)))
        yield [_line({"id": u.id, "mobile": u.mobile, "nickname": u.nickname, "avatar": u.avatar,
                      "sex": u.sex, "memo": u.memo, "createat": u.created_ms}) for u in users]


async def _files(archive: _Archive, upload_dir: Path, counts: Counts, progress: Progress
                 ) -> None:
    for name in sorted(archive.files):
        path = upload_dir / name
        if await asyncio.to_thread(path.is_file):
            await asyncio.to_thread(archive.zip.write, path, f"files/{name}")
            counts.files += 1
    progress(f"  files {counts.files}")


async def write_archive(scope: Scope, target: Path | IO[bytes], upload_dir: Path,
                        progress: Progress | None = None) -> Counts:
    """Write the archive of `scope` to `target` (a path or a binary file object)."""
    say = progress or (lambda _line: None)
    await check_scope(scope)
    counts, archive = Counts(), _Archive(target)
    try:
        await archive.write_lines("messages.jsonl", _messages(archive, scope, counts, say))
        await archive.write_lines("groups.jsonl", _groups(archive, scope, counts))
        await archive.write_lines("users.jsonl", _users(archive, counts))
        await _files(archive, upload_dir, counts, say)
        manifest = {"format": FORMAT, "version": VERSION, "imchat": __import__("app").__version__,
                    "scope": {"kind": scope.kind, "ids": list(scope.ids)},
                    "created_ms": now_ms(), "counts": dataclasses.asdict(counts)}
        await asyncio.to_thread(archive.zip.writestr, "manifest.json",
                                ujson.dumps(manifest, ensure_ascii=False, indent=2))
    finally:
        await archive.close()
    return counts


async def download(scope: Scope, upload_dir: Path, by: User, address: str
                   ) -> AsyncIterator[bytes]:
    """An administrator's download of `scope`: checked (NotFound before any byte is sent) and
    recorded in the audit log; then the archive's chunks."""
    await check_scope(scope)
    await audit.record(audit.EXPORT, actor=by, target=scope.describe(), address=address)
    return archive_chunks(scope, upload_dir)


async def archive_chunks(scope: Scope, upload_dir: Path) -> AsyncIterator[bytes]:
    """The archive of `scope` as chunks of bytes, for a download: written to a temporary file
    first (a zip's directory comes at its end), which is gone when the last chunk is sent."""
    with tempfile.TemporaryFile() as spool:
        await write_archive(scope, spool, upload_dir)
        await asyncio.to_thread(spool.seek, 0)
        while chunk := await asyncio.to_thread(spool.read, CHUNK):
            yield chunk
