"""What an uploaded file is and what it is called: the kind (picture, voice clip or any other
file) and type of a file by its first bytes, never by its name; a file name made safe to keep
and to offer in a download; and the headers a stored file is served with.

A browser runs HTML, SVG, XML and scripts it is given from our origin: no stored file is ever
served under such a type or inline, whatever it contains. Files are offered as downloads with
`Content-Disposition: attachment`, under a type from the short list below (what the content
proved it is) or `application/octet-stream`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple
from urllib.parse import quote

KIND_PICTURE = "picture"
KIND_VOICE = "voice"
KIND_FILE = "file"
KINDS = (KIND_PICTURE, KIND_VOICE, KIND_FILE)
STORED_FILE_EXTENSION = "bin"
OCTET_STREAM = "application/octet-stream"
PDF = "application/pdf"
MAX_NAME = 120

# (magic at offset, type): types safe to name because no browser runs them.
_FILE_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", PDF),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),  # old Office files
    (4, b"ftyp", "video/mp4"),
)

# Served inline for pictures (re-encoded by imchat: nothing hidden in them).
PICTURE_POLICY = "default-src 'none'; img-src 'self'; media-src 'self'"
# Everything else: nothing in it may load or run anything, even if opened in a tab.
DOWNLOAD_POLICY = "default-src 'none'; sandbox"
# A PDF shown in the web client's preview frame: the browser's own viewer draws it.
PDF_PREVIEW_POLICY = "default-src 'none'; object-src 'self'; frame-ancestors 'self'"

_UNSAFE_NAME_CHARACTERS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*\u2028\u2029\u202a-\u202e'
                                     r"\u2066-\u2069\ufeff]")


def file_type(data: bytes) -> str:
    """The type a non-picture, non-voice file is served with."""
    for offset, magic, mime in _FILE_SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return mime
    return OCTET_STREAM


def safe_name(name: str | None, fallback: str = "file") -> str:
    """A file name fit to keep and to offer in a download: the last path part, no control or
    bidirectional-override characters, no characters file systems refuse, not hidden, at most
    MAX_NAME characters with its extension kept."""
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[/\\]", text)[-1]
    text = _UNSAFE_NAME_CHARACTERS.sub("_", text)
    text = " ".join(text.split()).strip(" .")
    if not text or set(text) <= {"_", "."}:
        return fallback
    if len(text) > MAX_NAME:
        stem, dot, extension = text.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            text = stem[:MAX_NAME - len(extension) - 1] + "." + extension
        else:
            text = text[:MAX_NAME]
    return text


def content_disposition(kind: str, name: str) -> str:
    """`attachment` with the name in both forms (plain ASCII, and RFC 5987 UTF-8)."""
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class ServedAs(NamedTuple):
    """How a stored file goes out: its type and the headers to add."""

    mime: str
    headers: dict[str, str]


def served_as(kind: str, mime: str, name: str, preview: bool) -> ServedAs:
    """Pictures inline; a PDF inline only when asked for a preview; everything else a download
    under a type that no browser runs."""
    if kind == KIND_PICTURE and mime.startswith("image/") and "svg" not in mime:
        return ServedAs(mime, {"Content-Security-Policy": PICTURE_POLICY})
    if kind == KIND_FILE and mime == PDF and preview:
        return ServedAs(PDF, {"Content-Security-Policy": PDF_PREVIEW_POLICY,
                              "Content-Disposition": content_disposition("inline", name)})
    safe_mime = mime if mime.startswith("audio/") or mime in {m for _o, _b, m in
                                                                _FILE_SIGNATURES} else OCTET_STREAM
    headers = {"Content-Security-Policy": DOWNLOAD_POLICY,
               "Content-Disposition": (content_disposition("attachment", name) if name
                                       else "attachment")}
    return ServedAs(safe_mime, headers)
