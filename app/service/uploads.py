"""Uploads: decide the kind by content (a picture Pillow can read, a voice clip, or any other
file), re-encode pictures (dropping EXIF and anything hidden), refuse decompression bombs, store
under a server-made name with the uploaded name kept (made safe) for downloads, and keep
identical files once (the article's "秒传": a file already stored answers at once). Also the
upload limits: uploads per user per minute, new bytes per user per day, and pixels being
decoded at once (a small file can decode to hundreds of megabytes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import io
import os
import secrets
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from app.model.tables import Attachment, Upload, User
from app.service.file_types import (
    KIND_FILE,
    KIND_PICTURE,
    KIND_VOICE,
    STORED_FILE_EXTENSION,
    file_type,
    safe_name,
)
from app.util.errors import AppError, BadRequest, PayloadTooLarge, Throttled, UnsupportedMedia

if TYPE_CHECKING:
    from app.service.context import ServiceContext
    from app.service.upload_limits import DecodeGauge

PICTURE_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"),
                   "GIF": ("gif", "image/gif"), "WEBP": ("webp", "image/webp")}
THUMB_EDGE = 320
THUMB_SUFFIX = "_t.webp"  # a picture's thumbnail is stored beside it under this ending
MAX_FRAMES = 300
# How long an upload waits for pixels to decode before it is refused (429, "try again").
DECODE_WAIT_SECONDS = 15.0
# Pictures decode on threads of their own, few of them. glibc gives each thread its own malloc
# arena and keeps what a decode freed there for that thread's next use: spread over asyncio's
# default pool (up to cores + 4 threads), decodes that ran one at a time still left that many
# decoded pictures resident (measured: 135-231 MiB for six 6 Mpx pictures taken one at a time,
# 70 with one arena). The pixel budget bounds what decodes at once; this bounds what stays.
DECODE_THREADS = 2
_DECODERS = concurrent.futures.ThreadPoolExecutor(max_workers=DECODE_THREADS,
                                                  thread_name_prefix="imchat-decode")


@dataclasses.dataclass(frozen=True)
class StoredFile:
    url: str
    thumb_url: str
    mime: str
    width: int
    height: int
    kind: str
    size: int
    # The name this upload came with (made safe): what the sender's message shows.
    name: str


def _sniff_audio(data: bytes) -> tuple[str, str] | None:
    """Voice messages: a few container formats browsers record and play, by magic bytes."""
    if data[:4] == b"OggS":
        return "ogg", "audio/ogg"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "webm", "audio/webm"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav", "audio/wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3", "audio/mpeg"
    if data[4:8] == b"ftyp" and data[8:11] in (b"M4A", b"mp4", b"iso"):
        return "m4a", "audio/mp4"
    return None


def _reencode_picture(data: bytes, max_pixels: int) -> tuple[bytes, bytes, str, str, int, int]:
    """Return (picture, thumbnail, extension, mime, width, height) or raise an AppError."""
    with warnings.catch_warnings():
        # Pillow only warns below twice MAX_IMAGE_PIXELS; treat every bomb warning as refusal.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(PICTURE_FORMATS))
            width, height = image.size
            if width * height > max_pixels or width <= 0 or height <= 0:
                raise BadRequest(f"picture too large: {width}x{height} pixels")
            fmt = image.format or ""
            extension, mime = PICTURE_FORMATS[fmt]
            frames = getattr(image, "n_frames", 1)
            if frames > MAX_FRAMES or frames * width * height > max_pixels * 4:
                raise BadRequest(f"animated picture has too many frames (at most {MAX_FRAMES})")
            image.load()
            picture, width, height = _clean_copy(image, fmt, frames, width, height)
            thumbnail = _thumbnail(image, fmt, frames)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise BadRequest("picture refused: too many pixels (decompression bomb)") from None
        except UnidentifiedImageError:
            raise UnsupportedMedia("not a picture imchat accepts (PNG, JPEG, GIF, WebP)") from None
        except AppError:
            raise
        except Exception:
            # Damaged files make Pillow's decoders raise all sorts (OSError, IndexError,
            # struct.error, AssertionError...): whatever it is, the upload is refused.
            raise BadRequest("the picture is damaged and cannot be read") from None
    return picture, thumbnail, extension, mime, width, height


def _clean_copy(image: Image.Image, fmt: str, frames: int, width: int, height: int
                ) -> tuple[bytes, int, int]:
    """The picture saved anew without its metadata (a JPEG turned upright), and its size."""
    # Comments (JPEG COM, GIF comment blocks) would be copied by save(): drop them with the
    # rest of the metadata.
    image.info.pop("comment", None)
    out = io.BytesIO()
    if fmt == "GIF" and frames > 1:
        image.save(out, format="GIF", save_all=True, optimize=False, comment=b"",
                   loop=image.info.get("loop", 0), duration=image.info.get("duration", 100))
    elif fmt == "JPEG":
        upright = ImageOps.exif_transpose(image)
        upright = upright.convert("RGB") if upright.mode not in ("RGB", "L") else upright
        upright.info.pop("comment", None)
        upright.save(out, format="JPEG", quality=88, optimize=True)
        width, height = upright.size
    elif fmt == "WEBP" and frames > 1:
        image.save(out, format="WEBP", save_all=True, quality=85)
    elif fmt == "GIF":
        image.save(out, format="GIF", comment=b"")
    else:
        image.save(out, format=fmt)
    return out.getvalue(), width, height


def _thumbnail(image: Image.Image, fmt: str, frames: int) -> bytes:
    thumb = image.copy() if frames == 1 else image.convert("RGBA")
    if fmt == "JPEG":
        thumb = ImageOps.exif_transpose(thumb)
    thumb.thumbnail((THUMB_EDGE, THUMB_EDGE))
    out = io.BytesIO()
    thumb.convert("RGBA" if thumb.mode in ("RGBA", "LA", "P") else "RGB").save(
        out, format="WEBP", quality=80)
    return out.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _picture_pixels(data: bytes) -> int:
    """The pixels a picture declares (its header only; 0 when Pillow cannot tell)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data), formats=list(PICTURE_FORMATS)) as image:
                width, height = image.size
        except Exception:
            return 0  # the decode proper refuses it, with the right answer
    return max(0, width) * max(0, height)


def _counted_decode(gauge: DecodeGauge, pixels: int, data: bytes, max_pixels: int
                    ) -> tuple[bytes, bytes, str, str, int, int]:
    with gauge.decoding(pixels):
        return _reencode_picture(data, max_pixels)


async def _decode_picture(ctx: ServiceContext, data: bytes) -> tuple[bytes, bytes, str, str,
                                                                      int, int]:
    """Re-encode a picture once its pixels fit in the decode budget."""
    storage = ctx.settings.storage
    budget = ctx.upload_limits.decoding
    pixels = min(await asyncio.to_thread(_picture_pixels, data), storage.max_image_pixels)
    await budget.acquire(pixels, DECODE_WAIT_SECONDS)
    decode = asyncio.get_running_loop().run_in_executor(
        _DECODERS, _counted_decode, ctx.upload_limits.decoding_now, pixels, data,
        storage.max_image_pixels)
    # The thread cannot be stopped: if the client leaves, its pixels stay counted until the
    # decode really ends, or leaving early would be a way around the budget.
    decode.add_done_callback(lambda _done: budget.release(pixels))
    return await asyncio.shield(decode)


async def store_upload(ctx: ServiceContext, uploader: User, data: bytes, name: str = "",
                       wanted: str = "") -> StoredFile:
    """Store an upload; `wanted` ("picture", "voice", or "" for any) refuses other content
    with 415, for a client that asked to send a picture or a voice clip."""
    limit = ctx.settings.storage.max_upload_mb * 1024 * 1024
    if not data:
        raise BadRequest("the file is empty")
    if len(data) > limit:
        raise PayloadTooLarge(f"files are limited to {ctx.settings.storage.max_upload_mb} MB")
    limits = ctx.upload_limits
    key = str(uploader.id)
    if limits.per_minute.blocked(key):
        raise Throttled("you are uploading too fast; try again in a minute")
    limits.per_minute.hit(key)
    name = safe_name(name)
    digest = hashlib.sha256(data).hexdigest()
    known = await Attachment.get_or_none(sha256=digest)
    if known is not None and (ctx.settings.upload_path / known.stored_name).exists():
        _check_wanted(known.kind, wanted)
        await _note_uploader(known, uploader.id)
        return _stored(known, name)
    kind = await asyncio.to_thread(_kind_of, data)
    _check_wanted(kind, wanted)
    await limits.reserve_bytes(uploader.id, len(data))
    try:
        record = await _store_new(ctx, uploader, data, digest, known, kind, name)
    finally:
        limits.release_bytes(uploader.id, len(data))
    await _note_uploader(record, uploader.id)
    return _stored(record, name)


async def _note_uploader(record: Attachment, user_id: int) -> None:
    """Someone other than the first uploader sent the same content: they have it, so they
    may download and send it too (app/service/file_access.py)."""
    if record.uploader_id != user_id:
        await Upload.get_or_create(attachment_id=record.id, user_id=user_id)


def _check_wanted(kind: str, wanted: str) -> None:
    if wanted and kind != wanted:
        raise UnsupportedMedia("not a picture imchat accepts (PNG, JPEG, GIF, WebP)"
                               if wanted == KIND_PICTURE else "not a voice clip imchat accepts "
                               "(Ogg, WebM, WAV, MP3, M4A)")


def _kind_of(data: bytes) -> str:
    """A voice clip by its container's magic, a picture if Pillow knows its format (a damaged
    one is refused later, not stored as a file), else a file."""
    if _sniff_audio(data) is not None:
        return KIND_VOICE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data), formats=list(PICTURE_FORMATS)):
                return KIND_PICTURE
        except UnidentifiedImageError:
            return KIND_FILE
        except Exception:
            return KIND_PICTURE  # a picture header Pillow cannot read on: refused as damaged


async def _encode(ctx: ServiceContext, data: bytes, kind: str
                  ) -> tuple[bytes, bytes, str, str, int, int]:
    """(body, thumbnail, extension, mime, width, height) of what is stored for `kind`."""
    if kind == KIND_VOICE:
        extension, mime = _sniff_audio(data) or ("bin", "application/octet-stream")
        return data, b"", extension, mime, 0, 0
    if kind == KIND_FILE:
        return data, b"", STORED_FILE_EXTENSION, file_type(data), 0, 0
    return await _decode_picture(ctx, data)


async def _store_new(ctx: ServiceContext, uploader: User, data: bytes, digest: str,
                     known: Attachment | None, kind: str, original_name: str) -> Attachment:
    body, thumb, extension, mime, width, height = await _encode(ctx, data, kind)
    name = f"{secrets.token_hex(16)}.{extension}"
    directory = ctx.settings.upload_path
    directory.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_write_atomically, directory / name, body)
    if thumb:
        await asyncio.to_thread(_write_atomically, directory / thumb_name(name), thumb)
    if known is not None:  # the row survived but its file was removed: point it at the new file
        known.stored_name, known.mime, known.size, known.kind = name, mime, len(body), kind
        await known.save()
        return known
    record, _created = await Attachment.get_or_create(
        sha256=digest,
        defaults={"stored_name": name, "mime": mime, "size": len(body), "width": width,
                  "height": height, "uploader_id": uploader.id, "kind": kind,
                  "original_name": original_name},
    )
    return record


def thumb_name(name: str) -> str:
    return name.rsplit(".", 1)[0] + THUMB_SUFFIX


def _stored(record: Attachment, name: str) -> StoredFile:
    is_picture = record.mime.startswith("image/")
    return StoredFile(
        url=f"/resource/{record.stored_name}",
        thumb_url=f"/resource/{thumb_name(record.stored_name)}" if is_picture else "",
        mime=record.mime,
        width=record.width,
        height=record.height,
        kind=record.kind,
        size=record.size,
        name=name,
    )

