"""setup_logging(): the one place log format and levels are decided (stdout, journald-friendly)."""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
import threading
from urllib.parse import unquote_plus

# journald adds its own timestamps; a plain "level logger: message" line reads well there and
# on a terminal.
_FORMAT = "%(levelname)s %(name)s[%(process)d]: %(message)s"


class JournalFormatter(logging.Formatter):
    """Under systemd (JOURNAL_STREAM set), start each line with its syslog priority `<N>`, so
    `journalctl -p warning` works; elsewhere, plain lines."""

    _PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                   (logging.INFO, 6), (logging.DEBUG, 7))

    def __init__(self, fmt: str | None = None, journal: bool | None = None) -> None:
        super().__init__(fmt)
        self.journal = bool(os.environ.get("JOURNAL_STREAM")) if journal is None else journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if not self.journal:
            return line
        priority = next(p for level, p in self._PRIORITIES if record.levelno >= level or p == 7)
        return f"<{priority}>{line}"


# Query parameters whose values never reach a log line (by name, after percent-decoding):
# the article's `/chat?token=` sits in every access line, and old clients put more in the URL.
_SECRET_NAME = re.compile(r"token|passw|secret|pwd", re.IGNORECASE)


def redact_url(target: str) -> str:
    """`target` (a request line or URL) with the value of every secret-named query parameter
    replaced by `***`."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    query, hash_mark, fragment = query.partition("#")
    tail = ""
    if " " in query:  # "GET /x?a=1 HTTP/1.1": keep what follows the URL
        query, _, rest = query.partition(" ")
        tail = " " + rest
    parts = []
    for part in re.split(r"([&;])", query):
        name, equals, _value = part.partition("=")
        if equals and _SECRET_NAME.search(unquote_plus(name)):
            part = f"{name}=***"
        parts.append(part)
    return f"{path}?{''.join(parts)}{hash_mark}{fragment}{tail}"


class _SecretRedactingFilter(logging.Filter):
    """Keep credentials out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if isinstance(request, str) and "?" in request:
            record.request = redact_url(request)
        return True


class _StaticProbeFilter(logging.Filter):
    """Sanic logs a refused static path at ERROR, with a traceback line and the server's own
    folder; anyone can send such probes. They are kept out of the error log, and shown at DEBUG
    without the server's paths."""

    PREFIX = "File not found: path="

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(self.PREFIX):
            _, _, asked = record.msg.partition("relative_url=")
            logging.getLogger("imchat.static").debug("refused static path %.200r", asked)
            return False
        return True


class RepeatFilter(logging.Filter):
    """Keeps a storm of identical failures (every refused message logging the same error while
    the disk is full or the database away) from flooding the log, or the full disk itself.

    Warnings and errors are the same when they come from the same logger, level and message
    template. The
    first is let through; the rest of its `interval` are held back and counted, and the first
    one after the interval carries the count. A traceback is shown once per storm: later
    records of the same kind lose theirs until the kind has been quiet for `quiet` seconds."""

    def __init__(self, interval: float = 10.0, quiet: float = 600.0) -> None:
        super().__init__()
        self.interval = interval
        self.quiet = quiet
        self._lock = threading.Lock()
        # key -> [start of the current interval, records held back, last seen, traceback shown]
        self._kinds: dict[tuple[str, int, str], list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # failures only: a burst of sign-ups is not a storm
        key = (record.name, record.levelno, str(record.msg)[:300])
        now = record.created
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind[2] >= self.quiet:
                kind = None  # a new storm
            if kind is not None and now - kind[0] < self.interval:
                kind[1] += 1
                kind[2] = now
                return False
            held = kind[1] if kind is not None else 0
            traceback_shown = kind is not None and kind[3]
            self._kinds[key] = [now, 0, now, traceback_shown or bool(record.exc_info)]
            if len(self._kinds) > 2000:  # templates are few; this only bounds a pathological case
                self._kinds.clear()
        note = ""
        if held:
            note += f" [and {held} more like this in the last {self.interval:g} s]"
        if traceback_shown and record.exc_info:
            record.exc_info = None
            record.exc_text = None
            note += " [traceback as shown before]"
        if note:
            record.msg = str(record.msg) + note
        return True


def setup_logging(level: str = "INFO", access_log: bool = False) -> dict:
    """Configure root and Sanic loggers; return a dictConfig for Sanic's `log_config`."""
    config: dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": _SecretRedactingFilter},
                    "static_probe": {"()": _StaticProbeFilter},
                    "repeats": {"()": RepeatFilter}},
        "formatters": {
            "plain": {"()": JournalFormatter, "fmt": _FORMAT},
            "access": {"()": JournalFormatter,
                       "fmt": "INFO access[%(process)d]: %(host)s %(request)s %(status)s %(byte)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["repeats"],
                "stream": sys.stderr,
            },
            "access_console": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact"],
                "stream": sys.stdout,
            },
        },
        "loggers": {
            "sanic.root": {"level": level, "handlers": ["console"], "propagate": False},
            "sanic.error": {"level": level, "handlers": ["console"], "propagate": False,
                            "filters": ["static_probe"]},
            "sanic.server": {"level": level, "handlers": ["console"], "propagate": False},
            "sanic.websockets": {"level": "WARNING", "handlers": ["console"], "propagate": False},
            "sanic.access": {
                "level": "INFO" if access_log else "WARNING",
                "handlers": ["access_console"],
                "propagate": False,
            },
            "imchat": {"level": level, "handlers": ["console"], "propagate": False},
            "tortoise": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        },
    }
    logging.config.dictConfig(config)
    return config

