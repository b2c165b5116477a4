"""setup_logging(): the one place log format and levels are decided (stdout, journald-friendly)."""

from __future__ import annotations

import logging
import logging.config
import os
import sys

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


class _TokenRedactingFilter(logging.Filter):
    """Keep bearer tokens out of logs: the article's `/chat?token=` sits in every access line."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if isinstance(request, str) and "token=" in request:
            head, _, tail = request.partition("token=")
            rest = tail.split("&", 1)
            record.request = head + "token=***" + ("&" + rest[1] if len(rest) > 1 else "")
        return True


def setup_logging(level: str = "INFO", access_log: bool = False) -> dict:
    """Configure root and Sanic loggers; return a dictConfig for Sanic's `log_config`."""
    config: dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": _TokenRedactingFilter}},
        "formatters": {
            "plain": {"()": JournalFormatter, "fmt": _FORMAT},
            "access": {"()": JournalFormatter,
                       "fmt": "INFO access[%(process)d]: %(host)s %(request)s %(status)s %(byte)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
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
            "sanic.error": {"level": level, "handlers": ["console"], "propagate": False},
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

