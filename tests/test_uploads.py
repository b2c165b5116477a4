"""Uploads: typed by content, re-encoded, EXIF stripped, bombs refused, stored once, served safely
and only to signed-in users; any other file kept byte for byte under its (safe) name."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from app.model.tables import Attachment
from tests.factories import close_all, png_bytes, register


def jpeg_with_exif() -> bytes:
    image = Image.new("RGB", (64, 48), "blue")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc."  # Make
    exif[0x8825] = {2: (52.0, 31.0, 0.0)}  # GPS info
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge canvas (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\x00" * (width + 1) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


async def upload(user, data: bytes, name: str = "picture.png", filetype: str | None = None,
                 kind: str | None = None):
    form = {"filetype": filetype} if filetype else {}
    if kind:
        form["kind"] = kind
    return await user.client.post("/attach/upload", files={"file": (name, data)}, data=form)


async def test_picture_upload_and_fetch_back(server):
    a = await register(server)
    response = await upload(a, png_bytes(40, 30), filetype=".html")
    body = response.json()
    assert body["code"] == 0 and body["data"].startswith("/resource/")
    assert body["data"].endswith(".png") and body["mime"] == "image/png"
    assert (body["width"], body["height"]) == (40, 30) and body["thumb"].endswith(".webp")
    assert (body["kind"], body["name"]) == ("picture", "picture.png")
    fetched = await a.client.get(body["data"])
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in fetched.headers["content-security-policy"]
    assert "content-disposition" not in fetched.headers
    assert Image.open(io.BytesIO(fetched.content)).size == (40, 30)
    thumb = await a.client.get(body["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    await close_all(a)


async def test_exif_is_stripped(server):
    a = await register(server)
    body = (await upload(a, jpeg_with_exif(), "photo.jpg")).json()
    assert body["code"] == 0 and body["data"].endswith(".jpg")
    stored = (await a.client.get(body["data"])).content
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and len(image.getexif()) == 0
    assert b"SpyCam" not in stored
    await close_all(a)


async def test_identical_files_are_stored_once(server):
    a = await register(server)
    b = await register(server)
    data = png_bytes(10, 10, "green")
    first = (await upload(a, data)).json()
    second = (await upload(b, data, "other-name.png")).json()
    assert first["data"] == second["data"]
    assert await Attachment.all().count() == 1
    files = [p for p in server.settings.upload_path.iterdir() if not p.name.endswith("_t.webp")]
    assert len(files) == 1
    await close_all(a, b)


@pytest.mark.parametrize("payload, status", [
    (b"<html><script>alert(1)</script></html>", 415),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', 415),
    (b"GIF89a-not-really", 415),
    (png_bytes(200, 200, "red")[:70], 400),  # a real PNG header with its pixels cut off
    (b"", 400),
])
async def test_non_pictures_are_refused_when_a_picture_is_asked_for(server, payload, status):
    a = await register(server)
    response = await upload(a, payload, "innocent.png", filetype=".png", kind="picture")
    assert response.status_code == status and response.json()["code"] == -1
    assert await Attachment.all().count() == 0
    await close_all(a)


async def test_a_damaged_picture_is_refused_even_as_a_file(server):
    a = await register(server)
    response = await upload(a, png_bytes(200, 200, "red")[:70], "cut.png")
    assert response.status_code == 400 and response.json()["code"] == -1
    assert await Attachment.all().count() == 0
    await close_all(a)


async def test_decompression_bomb_is_refused(server):
    a = await register(server)
    response = await upload(a, png_claiming_size(10000, 10000))
    assert response.status_code == 400 and "too" in response.json()["msg"]
    assert await Attachment.all().count() == 0
    await close_all(a)


@pytest.mark.parametrize("settings_overrides", [{"storage": {"max_upload_mb": 1}}])
async def test_too_large_upload_is_413(server):
    a = await register(server)
    response = await upload(a, b"\x89PNG" + b"\x00" * (1024 * 1024 + 200 * 1024))
    assert response.status_code == 413 and response.json()["code"] == -1
    still_ok = await a.client.post("/user/me")
    assert still_ok.json()["code"] == 0
    await close_all(a)


async def test_voice_clip_is_served_as_attachment(server):
    a = await register(server)
    ogg = b"OggS" + b"\x00" * 200
    body = (await upload(a, ogg, "voice.html")).json()
    assert body["code"] == 0 and body["data"].endswith(".ogg") and body["thumb"] == ""
    assert (body["kind"], body["mime"], body["size"]) == ("voice", "audio/ogg", 204)
    fetched = await a.client.get(body["data"])
    assert fetched.headers["content-type"] == "audio/ogg"
    assert fetched.headers["content-disposition"] == (
        "attachment; filename=\"voice.html\"; filename*=UTF-8''voice.html")
    assert fetched.headers["x-content-type-options"] == "nosniff"
    assert fetched.content == ogg
    refused = await upload(a, png_bytes(), "clip.ogg", kind="voice")
    assert refused.status_code == 415
    await close_all(a)


async def test_upload_needs_a_file_and_a_session(server):
    a = await register(server)
    missing = await a.client.post("/attach/upload", data={"x": "1"})
    assert missing.status_code == 400
    async with server.client() as anonymous:
        response = await anonymous.post("/attach/upload", files={"file": ("a.png", png_bytes())})
    assert response.status_code == 401
    await close_all(a)


async def test_path_traversal_in_resource_is_not_served(server):
    async with server.client() as client:
        response = await client.get("/resource/..%2f..%2fetc%2fpasswd")
        assert response.status_code == 404
        assert b"root:" not in response.content
