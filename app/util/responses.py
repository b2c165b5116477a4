"""The article's response envelope: `{code, msg, data}`, lists `{code, rows, total}`."""

from __future__ import annotations

from typing import Any

import ujson
from sanic.response import HTTPResponse

_JSON = "application/json; charset=utf-8"


def _json(body: dict[str, Any], status: int = 200) -> HTTPResponse:
    return HTTPResponse(
        ujson.dumps(body, ensure_ascii=False, escape_forward_slashes=False),
        status=status,
        content_type=_JSON,
    )


def ok(data: Any = None, msg: str = "", **extra: Any) -> HTTPResponse:
    """`extra` adds top-level keys for newer clients; the article's client ignores them."""
    return _json({"code": 0, "msg": msg, "data": data, **extra})


def rows(items: list[Any], total: int | None = None, **extra: Any) -> HTTPResponse:
    """`extra` adds top-level keys for newer clients, as in `ok`."""
    return _json({"code": 0, "msg": "", "rows": items,
                  "total": len(items) if total is None else total, **extra})


def fail(msg: str, status: int = 200, reason: str = "failed", **extra: Any) -> HTTPResponse:
    return _json({"code": -1, "msg": msg, "reason": reason, **extra}, status=status)
