"""A hostile client against uploads: polyglots, damaged and extreme pictures, fuzzed files,
metadata, filenames that try to steer storage, concurrent identical uploads."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

from PIL import Image

from app.model.tables import Attachment
from tests.factories import (
    close_all,
    png_bytes,
    register,
)
from tests.hostile import (
    PAYLOADS,
    assert_clean_error,
    assert_still_serving,
    many_frame_gif,
    png_chunk,
    upload,
)


async def test_concurrent_identical_uploads_are_stored_once(server):
    users = [await register(server) for _ in range(3)]
    data = png_bytes(33, 17, "purple")
    answers = await asyncio.gather(*(upload(u, data) for u in users for _ in range(2)))
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 and b["code"] == 0 for a, b in zip(answers, bodies, strict=True)), \
        [a.text for a in answers]
    url = bodies[0]["data"]
    fetched = await users[0].client.get(url)
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (33, 17)
    assert await Attachment.all().count() == 1
    await close_all(*users)

# == uploads ==================================================================================

async def test_polyglots_and_scripts_never_come_back_as_active_content(server):
    a = await register(server)
    gif = io.BytesIO()
    Image.new("P", (8, 8), 3).save(gif, format="GIF")
    polyglot_gif = gif.getvalue()[:-1] + b"<html><script>alert(document.cookie)</script>" + b"\x3b"
    text_png = png_bytes(8, 8)
    text_png = (text_png[:33] + png_chunk(b"tEXt", b"Comment\x00<script>alert(1)</script>")
                + png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta>SPY</x:xmpmeta>")
                + text_png[33:])
    audio_polyglot = b"OggS" + b"\x00" * 24 + b"<html><script>alert(1)</script></html>"
    for data, name, kind in ((polyglot_gif, "../../../index.html", "image/gif"),
                             (text_png, "x.svg", "image/png"),
                             (audio_polyglot, "a.html", None)):
        response = await upload(a, data, name, filetype="text/html")
        body = response.json()
        assert body["code"] == 0, body
        url = body["data"]
        name_part = url.removeprefix("/resource/")
        assert "/" not in name_part and ".." not in name_part and "html" not in name_part
        assert len(name_part.split(".")[0]) >= 32  # server-made random name
        served = await a.client.get(url)
        assert served.status_code == 200
        assert served.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in served.headers["content-security-policy"]
        content_type = served.headers["content-type"]
        assert "html" not in content_type and "svg" not in content_type and "xml" not in content_type
        if kind is not None:
            assert content_type == kind
            assert b"<script" not in served.content and b"SPY" not in served.content
        else:
            assert served.headers.get("content-disposition", "").startswith("attachment")
    for hostile in (b"<!DOCTYPE html><script>alert(1)</script>",
                    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
                    b"%PDF-1.4\n", b"PK\x03\x04" + b"\x00" * 40, b"\x7fELF" + b"\x00" * 40):
        # Asked for as a picture, they are refused; as files they are stored, and served
        # only as downloads that nothing runs (tests/test_files.py).
        assert_clean_error(await a.client.post("/attach/upload", files={
            "file": ("pic.png", hostile)}, data={"filetype": "image/png", "kind": "picture"}),
            415)
        stored = (await upload(a, hostile, "pic.png", filetype="image/png")).json()
        served = await a.client.get(stored["data"])
        assert served.content == hostile and served.headers["content-type"] in (
            "application/octet-stream", "application/pdf", "application/zip")
        assert served.headers["content-disposition"].startswith("attachment; ")
        assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    await close_all(a)


async def test_damaged_and_extreme_pictures_are_handled_without_error(server):
    a = await register(server)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(jpeg, format="JPEG")
    cases = {
        "truncated png": png_bytes(50, 50)[:60],
        "truncated jpeg": jpeg.getvalue()[:200],
        "header only": b"\x89PNG\r\n\x1a\n",
        "bad crc": png_bytes(5, 5)[:29] + b"\x00\x00\x00\x00" + png_bytes(5, 5)[33:],
        "zero size": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0))
        + png_chunk(b"IEND", b""),
        "bomb 30000^2": b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 30001 * 64, 9)) + png_chunk(b"IEND", b""),
        "idat inflates past its size": b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 50_000_000, 9)) + png_chunk(b"IEND", b""),
    }
    for label, data in cases.items():
        response = await upload(a, data)
        assert response.status_code < 500, (label, response.text)
        if response.json()["code"] != 0:
            assert_clean_error(response, 400, 413, 415)
    tall = await upload(a, png_bytes(1, 100_000))
    assert tall.status_code < 500, tall.text
    if tall.json()["code"] == 0:
        thumb = await a.client.get(tall.json()["thumb"])
        assert thumb.status_code == 200
    await assert_still_serving(server, a)
    await close_all(a)


async def test_fuzzed_pictures_are_refused_without_500(server):
    a = await register(server)
    failures = []
    for path in sorted(PAYLOADS.iterdir()):
        if path.suffix not in (".gif", ".webp", ".png", ".jpg"):
            continue
        response = await upload(a, path.read_bytes(), path.name)
        if response.status_code >= 500:
            failures.append((path.name, response.status_code))
        elif response.json()["code"] != 0:
            assert_clean_error(response, 400, 415)
    assert failures == []
    await assert_still_serving(server, a)
    await close_all(a)


async def test_picture_comments_are_stripped(server):
    a = await register(server)
    marker = b"GPS 52.37N 4.89E owner=alice serial=SN123"
    jpeg = io.BytesIO()
    Image.new("RGB", (24, 24), "red").save(jpeg, format="JPEG", comment=marker)
    gif = io.BytesIO()
    frames = [Image.new("P", (24, 24), i) for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], comment=marker)
    still_gif = io.BytesIO()
    Image.new("P", (24, 24), 1).save(still_gif, format="GIF", comment=marker)
    leaked = []
    for label, data in (("jpeg", jpeg.getvalue()), ("animated gif", gif.getvalue()),
                        ("gif", still_gif.getvalue())):
        body = (await upload(a, data)).json()
        assert body["code"] == 0, body
        for url in (body["data"], body["thumb"]):
            if marker in (await a.client.get(url)).content:
                leaked.append((label, url))
    assert leaked == []
    await close_all(a)


async def test_gif_with_absurd_frame_count_is_refused(server):
    a = await register(server)
    response = await upload(a, many_frame_gif(20_000), "anim.gif")
    assert_clean_error(response, 400, 413, 415)
    await assert_still_serving(server, a)
    await close_all(a)


async def test_upload_filenames_and_headers_cannot_steer_storage(server):
    a = await register(server)
    data = png_bytes(12, 12, "navy")
    for name in ("../../../../etc/passwd", "..\\..\\win.ini", "/abs/x.html", "x\x00.html",
                 "a\r\nContent-Type: text/html\r\n.png", "%2e%2e%2fx.png", "x.php;.png", "." * 300):
        response = await a.client.post("/attach/upload", files={
            "file": (name, data, "text/html")}, data={"filetype": "../../x"})
        assert response.status_code < 500, (name, response.text)
        body = response.json()
        assert body["code"] == 0 and body["data"].startswith("/resource/"), body
        stored = body["data"].removeprefix("/resource/")
        assert "/" not in stored and ".." not in stored and stored.endswith(".png")
    files = list(server.settings.upload_path.parent.rglob("*"))
    assert all(server.settings.upload_path in p.parents or p == server.settings.upload_path
               or p.suffix in (".db", ".db-wal", ".db-shm") for p in files), files
    await close_all(a)
