"""/attach/upload: a picture, voice clip or any other file in, its /resource/ URL out; and
/resource/<name>: a stored file out, to signed-in users it was shared with (or a range of it)."""

from __future__ import annotations

from email.utils import formatdate

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, file, file_stream
from sanic_ext import openapi

from app.controller.session import require_user, services
from app.service import downloads, uploads
from app.service.file_types import KIND_FILE, KINDS
from app.util.binding import request_fields, text_field
from app.util.errors import BadRequest, NoSuchFile
from app.util.responses import ok

attach_bp = Blueprint("attach", url_prefix="/attach")
resource_bp = Blueprint("resource", url_prefix="/resource")

# Larger files (or parts) are streamed from disk rather than read whole into memory.
STREAM_ABOVE_BYTES = 1024 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


@attach_bp.post("/upload")
@openapi.summary("Upload a picture, a voice clip or any file as multipart `file`")
@openapi.description(
    "The kind is decided by the content, never by the name or `filetype`: a picture Pillow "
    "reads (PNG/JPEG/GIF/WebP, re-encoded), a voice clip (Ogg/WebM/WAV/MP3/M4A) or a file. "
    "Optional `kind` (`picture` or `voice`) refuses other content with 415. An identical file "
    "already stored answers at once. `data` is the file's URL; `thumb` a small preview for "
    "pictures; `kind`, `name` (the upload's name, made safe), `size` in bytes, `mime`.")
async def upload(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    upload_file = request.files.get("file") if request.files else None
    if upload_file is None:
        raise BadRequest("send the file as multipart form field `file`")
    wanted = text_field(fields, "kind", max_length=10)
    if wanted not in ("", *KINDS) or wanted == KIND_FILE:
        raise BadRequest("kind must be picture or voice (or left out)")
    stored = await uploads.store_upload(services(request), user, upload_file.body,
                                        name=upload_file.name or "", wanted=wanted)
    return ok(stored.url, thumb=stored.thumb_url, mime=stored.mime, width=stored.width,
              height=stored.height, kind=stored.kind, name=stored.name, size=stored.size)


@resource_bp.route("/<name:str>", methods=["GET", "HEAD"])
@openapi.summary("Download a stored file (signed-in users it was shared with)")
@openapi.description(
    "Pictures are served inline; everything else with `Content-Disposition: attachment`, a "
    "type no browser runs, `nosniff` and a sandboxing CSP. `name` sets the download's file "
    "name; `preview=1` shows a PDF inline (for the web client's preview). The session cookie "
    "is enough, so `<img>`, `<audio>` and links work in the web client. Only for its "
    "uploaders, readers of a message linking to it (by the history rule) and, for avatars "
    "and group icons, anyone signed in; 404 for anyone else. One byte range "
    "(`Range: bytes=a-b`, `a-` or `-n`) is answered 206 with `Content-Range` (players seek "
    "with these), a range beyond the file 416; several ranges get the whole file.")
async def resource(request: Request, name: str) -> HTTPResponse:
    if not downloads.is_stored_name(name):
        raise NoSuchFile()  # before asking who calls: nothing else lives here
    user = await require_user(request)
    found = await downloads.open_download(
        services(request).settings, user.id, name, preview=request.args.get("preview") == "1",
        download_name=(request.args.get("name") or "")[:255])
    return await _send(request, found)


async def _send(request: Request, found: downloads.Download) -> HTTPResponse:
    """The file, or the one range of it asked for; HEAD gets the same headers, no body."""
    stat = found.path.stat()
    modified = formatdate(stat.st_mtime, usegmt=True)
    # If-Range: a range of the copy the client already has, else the whole (current) file.
    wanted = request.headers.get("range") if request.headers.get(
        "if-range", modified) == modified else None
    part = downloads.byte_range(wanted, stat.st_size)
    headers = {**found.headers, "cache-control": "private, max-age=86400",
               "Accept-Ranges": "bytes", "Last-Modified": modified}
    if request.method == "HEAD":
        if part is not None:
            headers["Content-Range"] = f"bytes {part.start}-{part.end}/{part.total}"
        headers["Content-Length"] = str(part.size if part else stat.st_size)
        return HTTPResponse(status=206 if part else 200, headers=headers,
                            content_type=found.mime)
    if (part.size if part else stat.st_size) > STREAM_ABOVE_BYTES:
        headers["Content-Length"] = str(part.size if part else stat.st_size)
        return await file_stream(found.path, mime_type=found.mime, headers=headers,
                                 chunk_size=STREAM_CHUNK_BYTES, _range=part)
    return await file(found.path, mime_type=found.mime, headers=headers, last_modified=None,
                      _range=part)
