"""The reconnect storm (bench/stormgen.py) waits as the web client does (asset/js/socket.js):
the same constants, the same jitter, the same cap. No timing, no server: a pure function."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_stormgen():  # noqa: ANN201 - a module of bench/, which is not a package
    sys.path.insert(0, str(REPO / "bench"))  # stormgen imports its sibling loadgen
    try:
        return importlib.import_module("stormgen")
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_the_constants_and_the_jitter_are_the_web_clients() -> None:
    stormgen = load_stormgen()
    js = (REPO / "asset" / "js" / "socket.js").read_text()
    assert f"var BACKOFF_FIRST_MS = {stormgen.BACKOFF_FIRST_MS};" in js
    assert f"var BACKOFF_MAX_MS = {stormgen.BACKOFF_MAX_MS};" in js
    assert "BACKOFF_FIRST_MS * Math.pow(2, this.attempt - 1)" in js
    assert "Math.round(base * (0.75 + Math.random() * 0.5))" in js


def test_the_schedule_doubles_with_jitter_up_to_the_cap() -> None:
    delay = load_stormgen().backoff_delay_ms
    assert (delay(1, 0.0), delay(1, 0.5), delay(1, 0.999999)) == (375, 500, 625)
    assert (delay(2, 0.0), delay(2, 0.5)) == (750, 1000)
    assert delay(5, 0.5) == 8000
    assert delay(6, 0.5) == 15000  # 16 s capped at 15 s
    assert (delay(30, 0.0), delay(30, 0.999999)) == (11250, 18750)
