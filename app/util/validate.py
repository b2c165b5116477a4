"""Checks of single values from hostile input, shared by the HTTP binding and the chat frames
(no web framework here): text the database and the wire can carry, and whole numbers that are
really whole numbers."""

from __future__ import annotations

from typing import Any

from app.util.errors import BadRequest


def check_text(text: str, label: str) -> str:
    """Text the database and the wire can carry: no NUL, no lone UTF-16 surrogates (valid in
    JSON as "\ud800", unencodable as UTF-8)."""
    if "\x00" in text:
        raise BadRequest(f"{label} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{label} is not valid Unicode text") from None
    return text


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """An int from JSON or form input; floats, infinities, booleans and non-ASCII digits are
    refused rather than truncated or converted."""
    if isinstance(value, str):
        text = value
        if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
            raise BadRequest(f"{name} must be a whole number from {low} to {high}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return value
