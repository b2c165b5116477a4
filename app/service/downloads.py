"""Serving stored uploads (`/resource/<name>`): which file a name means, and the type and
headers it goes out with (app/service/file_types.py decides those). Only names the server made
are looked at; anything else is "not found" before a disk or database lookup."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.model.tables import Attachment
from app.service import file_access
from app.service.file_types import (
    KIND_FILE,
    KIND_PICTURE,
    KIND_VOICE,
    OCTET_STREAM,
    safe_name,
    served_as,
)
from app.service.uploads import PICTURE_FORMATS, THUMB_SUFFIX
from app.settings import Settings
from app.util.errors import NoSuchFile, RangeNotSatisfiable

# One range of bytes (RFC 9110 14.1.2): "first-", "first-last" or "-suffix". Offsets beyond 19
# digits are no file's: such a header is ignored like any other malformed one.
_ONE_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
STORED_NAME = re.compile(r"^[0-9a-f]{32}(?:_t\.webp|\.[a-z0-9]{1,5})$")
_PICTURE_TYPES = {extension: mime for extension, mime in PICTURE_FORMATS.values()}
_VOICE_TYPES = {"ogg": "audio/ogg", "webm": "audio/webm", "wav": "audio/wav", "mp3": "audio/mpeg",
                "m4a": "audio/mp4"}


@dataclasses.dataclass(frozen=True)
class Download:
    path: Path
    mime: str
    headers: dict[str, str]


@dataclasses.dataclass(frozen=True)
class ByteRange:
    """The part of a file a `Range` request gets: bytes `start` to `end`, both included, of
    `total` (what Sanic's file helpers take as `_range`)."""

    start: int
    end: int
    total: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def byte_range(header: str | None, total: int) -> ByteRange | None:
    """The range a `Range` header asks for, its end cut to the file's; None for the whole
    file: no header, another unit, several ranges or a malformed one (which RFC 9110 lets a
    server answer whole: players ask for one range). RangeNotSatisfiable (416) for a range
    that starts beyond the file or an empty suffix. Sanic's own ContentRangeHandler is not
    used: it answers a negative start for a suffix longer than the file and does not cut an
    end beyond it, so its Content-Range would name bytes that are not there."""
    match = _ONE_RANGE.match((header or "").replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last `last` bytes
        if int(last) == 0 or total == 0:
            raise RangeNotSatisfiable(total)
        return ByteRange(max(0, total - int(last)), total - 1, total)
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored, the whole file is sent
    if start >= total:
        raise RangeNotSatisfiable(total)
    return ByteRange(start, min(int(last), total - 1) if last else total - 1, total)


def is_stored_name(name: str) -> bool:
    return bool(STORED_NAME.match(name))


async def _describe(name: str) -> tuple[str, str, str]:
    """(kind, mime, original name) of a stored file; files stored before rows had a kind (or
    without a row at all) are judged by the extension the server gave them."""
    if name.endswith(THUMB_SUFFIX):
        return KIND_PICTURE, "image/webp", ""
    record = await Attachment.get_or_none(stored_name=name)
    if record is not None and record.kind:
        return record.kind, record.mime, record.original_name
    extension = name.rsplit(".", 1)[-1]
    if extension in _PICTURE_TYPES:
        return KIND_PICTURE, _PICTURE_TYPES[extension], ""
    if extension in _VOICE_TYPES:
        return KIND_VOICE, _VOICE_TYPES[extension], ""
    return KIND_FILE, OCTET_STREAM, ""


async def open_download(settings: Settings, user_id: int, name: str, *, preview: bool = False,
                        download_name: str = "") -> Download:
    """The file behind a /resource/ name, for a signed-in user who may download it
    (app/service/file_access.py; "no such file" otherwise). `download_name` (the name the
    sender's message shows) replaces the stored original name; both are made safe."""
    if not is_stored_name(name):
        raise NoSuchFile()
    await file_access.check_download(user_id, name)
    path = settings.upload_path / name
    if not path.is_file():
        raise NoSuchFile()
    kind, mime, original = await _describe(name)
    shown = safe_name(download_name or original or name, fallback=name)
    served = served_as(kind, mime, shown, preview)
    return Download(path, served.mime, served.headers)

