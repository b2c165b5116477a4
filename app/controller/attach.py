"""/attach/upload: a picture or voice clip in, its /resource/ URL out."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import require_user, services
from app.service import uploads
from app.util.binding import request_fields
from app.util.errors import BadRequest
from app.util.responses import ok

attach_bp = Blueprint("attach", url_prefix="/attach")


@attach_bp.post("/upload")
@openapi.summary("Upload a picture (PNG/JPEG/GIF/WebP) or a voice clip as multipart `file`")
@openapi.description("The type is decided by the content, never by the name or `filetype`. "
                     "`data` is the file's URL; `thumb` a small preview for pictures.")
async def upload(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    upload_file = request.files.get("file") if request.files else None
    if upload_file is None:
        raise BadRequest("send the file as multipart form field `file`")
    stored = await uploads.store_upload(services(request), user, upload_file.body)
    return ok(stored.url, thumb=stored.thumb_url, mime=stored.mime, width=stored.width,
              height=stored.height)
