"""Request binding: read a form-urlencoded, multipart or JSON body (the article's client sends
forms, newer clients JSON) into one flat dict of strings, and typed field readers over it."""

from __future__ import annotations

from typing import Any

import ujson
from sanic import Request

from app.util.errors import BadRequest
from app.util.validate import check_text, whole_number

PASSWORD_FIELDS = ("passwd", "password")


def request_fields(request: Request) -> dict[str, Any]:
    """Query arguments overlaid by the body's fields; the first value of a repeated field wins.
    A password is only ever read from the body: in the address it would land in logs."""
    if any(name in request.args for name in PASSWORD_FIELDS):
        raise BadRequest("send the password in the request body, never in the address")
    fields: dict[str, Any] = {key: values[0] for key, values in request.args.items() if values}
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if not request.body:
        return fields
    if content_type == "application/json":
        try:
            body = ujson.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the JSON body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the JSON body must be an object")
        fields.update(body)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = request.form
        except Exception:  # Sanic raises assorted errors for mangled bodies
            raise BadRequest("the form body cannot be parsed") from None
        fields.update({key: values[0] for key, values in form.items() if values})
    else:
        raise BadRequest("send the fields as a form or as JSON")
    return fields


def text_field(
    fields: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_length: int = 255,
    default: str = "",
    label: str | None = None,
) -> str:
    value = fields.get(name)
    label = label or name
    if value is None or value == "":
        if required:
            raise BadRequest(f"{label} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{label} must be text")
    text = str(value).strip()
    check_text(text, label)
    if len(text) > max_length:
        raise BadRequest(f"{label} is longer than {max_length} characters")
    if required and not text:
        raise BadRequest(f"{label} is required")
    return text


def id_field(fields: dict[str, Any], name: str, *, required: bool = True,
             minimum: int = 1) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return None
    return whole_number(value, name, minimum, 2**63 - 1)
