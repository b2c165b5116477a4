"""/message/search: find messages the caller may read (the query, the access rule and the index
are app/service/search/'s)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext import openapi

from app.controller.session import require_user, services
from app.service import search
from app.util.binding import id_field, request_fields
from app.util.errors import BadRequest, Throttled
from app.util.responses import rows
from app.util.validate import check_text

search_bp = Blueprint("search", url_prefix="/message")


@search_bp.post("/search")
@openapi.summary("Search my messages (q; optional cmd + dstid for one conversation, before, "
                 "limit): newest first, exact phrase first, with match offsets")
@openapi.description(
    "Fields: `q` (required; at most search.max_query_length characters, not only punctuation), "
    "`cmd` + `dstid` (10 = one to one, 11 = group) to search one conversation, `before` (a "
    "message id: only older messages, for the next page), `limit` (1..100). Answers `rows` "
    "(messages as in history, each with `match`: [[start, end), ...] offsets into `content` "
    "in Unicode code points, and `exact`: whether it holds the whole query as a phrase), "
    "`total` (rows in this page), `more` and `next_before` (ask again with before = "
    "next_before). HTTP 429 when the caller searches too often.")
async def search_messages(request: Request) -> HTTPResponse:
    fields = request_fields(request)
    user = await require_user(request, fields)
    settings = services(request).settings.search
    raw = fields.get("q")
    if raw is None or raw == "":
        raise BadRequest("q is required")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise BadRequest("q must be text")
    query = search.parse_query(check_text(str(raw), "q"), settings.max_query_length)
    cmd = id_field(fields, "cmd", required=False)
    dstid = id_field(fields, "dstid", required=False)
    if cmd is not None and cmd not in (search.CMD_SINGLE, search.CMD_GROUP):
        raise BadRequest("cmd must be 10 (one to one) or 11 (group)")
    if (cmd is None) != (dstid is None):
        raise BadRequest("give cmd and dstid together, or neither")
    limit = id_field(fields, "limit", required=False) or settings.page_size
    if limit > 100:
        raise BadRequest("limit must be a whole number from 1 to 100")
    before = id_field(fields, "before", required=False)
    limiter = request.app.ctx.search_limiter
    key = str(user.id)
    if limiter.blocked(key):
        raise Throttled(f"at most {settings.queries_per_minute} searches a minute; "
                        "wait a moment")
    limiter.hit(key)
    found = await search.search(
        user.id, query, cmd, dstid, before, limit,
        search.Budget(settings.max_candidates, settings.max_query_ms / 1000))
    return rows(found["rows"], more=found["more"], next_before=found["next_before"])
