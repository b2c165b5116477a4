"""The AppError hierarchy: every refusal imchat makes, with its HTTP status and wire code.

Services raise these; one Sanic error handler renders them into the article's envelope
(`{"code": -1, "msg": ...}`), and the chat socket sends the same code and message in an error
frame. Status 200 is used where the article's client must be able to read the reason.
"""

from __future__ import annotations

from typing import ClassVar


class AppError(Exception):
    status: ClassVar[int] = 200
    message: ClassVar[str] = "request failed"
    # A stable machine-readable reason for v2 clients; the envelope's `code` stays -1.
    reason: ClassVar[str] = "failed"

    def __init__(self, message: str | None = None) -> None:
        self.detail = message or self.message
        # Headers the refusal goes out with (a 416 names the file's length).
        self.headers: dict[str, str] = {}
        super().__init__(self.detail)


class BadRequest(AppError):
    status = 400
    message = "malformed request"
    reason = "bad_request"


class Refused(AppError):
    """A well-formed request the rules refuse; HTTP 200 so the article's client shows `msg`."""

    message = "request refused"
    reason = "refused"


class NotFound(Refused):
    message = "not found"
    reason = "not_found"


class TooLate(Refused):
    """A change whose time is over (an edit or recall after its window)."""

    message = "too late for that"
    reason = "too_late"
class NoSuchFile(AppError):
    """A /resource/ file that is not there: a real 404 (no article client reads these)."""

    status = 404
    message = "no such file"
    reason = "not_found"


class RangeNotSatisfiable(AppError):
    """A /resource/ byte range outside the file: 416, naming the file's length."""

    status = 416
    message = "the range asked for is not in the file"
    reason = "range_not_satisfiable"

    def __init__(self, total: int) -> None:
        super().__init__()
        self.headers["Content-Range"] = f"bytes */{total}"


class Conflict(Refused):
    message = "already exists"
    reason = "conflict"


class Unauthorized(AppError):
    status = 401
    message = "please log in"
    reason = "unauthorized"


class Forbidden(AppError):
    status = 403
    message = "not allowed"
    reason = "forbidden"


class PayloadTooLarge(AppError):
    status = 413
    message = "request too large"
    reason = "too_large"


class UnsupportedMedia(AppError):
    status = 415
    message = "unsupported file type"
    reason = "unsupported_media"


class Throttled(AppError):
    status = 429
    message = "too many requests, slow down"
    reason = "throttled"


class Unavailable(AppError):
    status = 503
    message = "service unavailable, try again"
    reason = "unavailable"
