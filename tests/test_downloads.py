"""Downloads of stored files (/resource/<name>): byte ranges for players that seek (206,
Content-Range, 416 beyond the file, the whole file without a Range), with the download's
safety headers on every answer; and who may download what (the readers of a message that
refers to the file, its uploaders, and anyone signed in for avatars and group icons)."""

from __future__ import annotations

import os

import httpx
import pytest

from app.service.downloads import ByteRange, byte_range
from app.util.errors import RangeNotSatisfiable
from tests.factories import close_all, register

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
