"""Log lines: journald priorities under systemd, tokens never written."""

from __future__ import annotations

import logging

from app.util.logs import JournalFormatter, _SecretRedactingFilter, redact_url


def record(level: int, msg: str = "hello") -> logging.LogRecord:
    return logging.LogRecord("imchat.test", level, __file__, 1, msg, None, None)


def test_journal_priorities_only_under_systemd():
    journal = JournalFormatter("%(levelname)s %(message)s", journal=True)
    assert journal.format(record(logging.ERROR)) == "<3>ERROR hello"
    assert journal.format(record(logging.WARNING)) == "<4>WARNING hello"
    assert journal.format(record(logging.INFO)) == "<6>INFO hello"
    assert journal.format(record(logging.DEBUG)) == "<7>DEBUG hello"
    assert journal.format(record(logging.CRITICAL)) == "<2>CRITICAL hello"
    plain = JournalFormatter("%(levelname)s %(message)s", journal=False)
    assert plain.format(record(logging.ERROR)) == "ERROR hello"


def test_tokens_are_redacted_from_access_lines():
    line = record(logging.INFO)
    line.request = "GET /chat?id=3&token=s3cr3t-value&v=2"
    assert _SecretRedactingFilter().filter(line)
    assert line.request == "GET /chat?id=3&token=***&v=2"


def test_every_secret_named_parameter_is_redacted():
    assert redact_url("/x?notatoken=1&token=T") == "/x?notatoken=***&token=***"
    assert redact_url("/a?to%6Ben=zz;b=1#frag") == "/a?to%6Ben=***;b=1#frag"
    assert redact_url("POST /user/login?passwd=p&mobile=m HTTP/1.1") == (
        "POST /user/login?passwd=***&mobile=m HTTP/1.1")
    assert redact_url("/plain") == "/plain" and redact_url("/q?a=1") == "/q?a=1"
def test_a_storm_of_identical_failures_logs_one_traceback_and_a_count():
    import io

    from app.util.logs import RepeatFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RepeatFilter(interval=10.0))
    logger = logging.getLogger("imchat.test.storm")
    logger.addHandler(handler)
    logger.propagate = False
    clock = [1000.0]
    factory = logging.getLogRecordFactory()

    def at_clock(*args, **kwargs):
        made = factory(*args, **kwargs)
        made.created = clock[0]
        return made

    logging.setLogRecordFactory(at_clock)
    try:
        for second in range(30):  # 30 s of 200 refused messages a second
            clock[0] = 1000.0 + second
            for user in range(200):
                try:
                    raise OSError(28, "No space left on device")
                except OSError:
                    logger.exception("storing a message from user %s failed", user)
        logger.warning("something else happened")
    finally:
        logging.setLogRecordFactory(factory)
        logger.removeHandler(handler)
    text = stream.getvalue()
    lines = [line for line in text.splitlines() if line.startswith(("ERROR", "WARNING"))]
    assert text.count("Traceback") == 1
    assert len(lines) == 4  # one per 10 s interval, and the unrelated warning
    assert "[and 1999 more like this in the last 10 s]" in lines[1]
    assert "traceback as shown before" in lines[1]
    assert lines[-1] == "WARNING something else happened"
    assert len(text) < 5000
