"""Serving stored uploads (`/resource/<name>`): which file a name means, and the type and
headers it goes out with (app/service/file_types.py decides those). Only names the server made
are looked at; anything else is "not found" before a disk or database lookup."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.model.tables import Attachment
from app.service.file_types import (
    KIND_FILE,
    KIND_PICTURE,
    KIND_VOICE,
    OCTET_STREAM,
    safe_name,
    served_as,
)
from app.service.uploads import PICTURE_FORMATS
from app.settings import Settings
from app.util.errors import NoSuchFile

STORED_NAME = re.compile(r"^[0-9a-f]{32}(?:_t\.webp|\.[a-z0-9]{1,5})$")
_PICTURE_TYPES = {extension: mime for extension, mime in PICTURE_FORMATS.values()}
_VOICE_TYPES = {"ogg": "audio/ogg", "webm": "audio/webm", "wav": "audio/wav", "mp3": "audio/mpeg",
                "m4a": "audio/mp4"}


@dataclasses.dataclass(frozen=True)
class Download:
    path: Path
    mime: str
    headers: dict[str, str]


def is_stored_name(name: str) -> bool:
    return bool(STORED_NAME.match(name))


async def _describe(name: str) -> tuple[str, str, str]:
    """(kind, mime, original name) of a stored file; files stored before rows had a kind (or
    without a row at all) are judged by the extension the server gave them."""
    if name.endswith("_t.webp"):
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


async def open_download(settings: Settings, name: str, *, preview: bool = False,
                        download_name: str = "") -> Download:
    """The file behind a /resource/ name, for a signed-in user. `download_name` (the name the
    sender's message shows) replaces the stored original name; both are made safe."""
    if not is_stored_name(name):
        raise NoSuchFile()
    path = settings.upload_path / name
    if not path.is_file():
        raise NoSuchFile()
    kind, mime, original = await _describe(name)
    shown = safe_name(download_name or original or name, fallback=name)
    served = served_as(kind, mime, shown, preview)
    return Download(path, served.mime, served.headers)

