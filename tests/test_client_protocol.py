"""The web client's wire vocabulary (asset/js/protocol.js) against the server's: every frame
`cmd`, close code, retryable refusal reason and media kind the client names must be the
server's, every frame the server defines must be known to the client, and no client file may
use a bare frame number instead of the names. Also: the picture types the client offers are the
ones the server stores. protocol.js is loaded by node (needed for `make assets` anyway), as
the browser would run it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.chat import wire
from app.service import uploads
from app.util import errors
from tests.harness import unavailable

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "asset" / "js"

# The server's name for each of the client's CMD names.
SERVER_CMD = {
    "HEARTBEAT": wire.CMD_HEART,
    "SINGLE": wire.CMD_SINGLE,
    "GROUP": wire.CMD_GROUP,
    "ACK": wire.CMD_ACK,
    "REFUSED": wire.CMD_ERROR,
    "READ": wire.CMD_READ,
    "TYPING": wire.CMD_TYPING,
    "PRESENCE": wire.CMD_PRESENCE,
    "SYNC": wire.CMD_SYNC,
    "SYNC_END": wire.CMD_SYNC_END,
    "RESYNC": wire.CMD_RESYNC,
    "CONTACTS": wire.CMD_CONTACTS,
    "RECALL": wire.CMD_RECALL,
    "EDIT": wire.CMD_EDIT,
    "REACT": wire.CMD_REACT,
    "MUTE": wire.CMD_MUTE,
    "GROUP_ACTION": wire.CMD_GROUP_ACTION,
}


def _node_eval(files: list[Path], expression: str) -> Any:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    script = "".join(f"require({json.dumps(str(path))});" for path in files)
    script += f"process.stdout.write(JSON.stringify({expression}));"
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30,
                          check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def protocol() -> dict[str, Any]:
    return _node_eval([CLIENT / "protocol.js"], "globalThis.IM.protocol")


def test_every_client_cmd_is_the_servers(protocol: dict[str, Any]) -> None:
    assert protocol["CMD"] == SERVER_CMD


def test_every_server_cmd_is_known_to_the_client(protocol: dict[str, Any]) -> None:
    server = {name: value for name, value in vars(wire).items()
              if name.startswith("CMD_") and isinstance(value, int)}
    unknown = {name: value for name, value in server.items()
               if value not in protocol["CMD"].values()}
    assert not unknown, f"frames the server defines but asset/js/protocol.js lacks: {unknown}"


def test_relations_and_reactions_are_the_servers(protocol: dict[str, Any]) -> None:
    assert sorted(protocol["REL"].values()) == sorted(
        [wire.REL_REPLY, *wire.REL_OF_MEDIA.values()])
    assert protocol["REACTIONS"] == list(wire.REACTIONS)


def test_close_codes(protocol: dict[str, Any]) -> None:
    assert protocol["CLOSE"]["SESSION_ENDED"] == wire.CLOSE_SESSION_ENDED
    assert protocol["CLOSE"]["NORMAL"] == 1000   # RFC 6455 normal closure


def test_retryable_reasons_are_server_reasons(protocol: dict[str, Any]) -> None:
    reasons = {cls.reason for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, errors.AppError)}
    assert protocol["RETRY_REASONS"], "the client retries nothing"
    assert set(protocol["RETRY_REASONS"]) <= reasons
    assert errors.Throttled.reason in protocol["RETRY_REASONS"]


def test_protocol_version_is_the_one_the_server_serves(protocol: dict[str, Any]) -> None:
    source = (REPO / "app" / "controller" / "chat.py").read_text(encoding="utf-8")
    assert f'query.get("v") == "{protocol["VERSION"]}"' in source


def test_media_kinds_are_the_documented_ones(protocol: dict[str, Any]) -> None:
    # The server stores `media` as given; docs/protocol.md is where its kinds are defined.
    doc = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    line = next(line for line in doc.splitlines() if line.startswith("- `media`:"))
    documented = {word.upper(): int(number)
                  for number, word in re.findall(r"(\d+) (\w+)", line)}
    assert protocol["MEDIA"] == {"TEXT": documented["TEXT"], "VOICE": documented["VOICE"],
                                 "PICTURE": documented["PICTURE"], "FILE": documented["FILE"],
                                 "NOTICE": documented["NOTICE"]}
    assert protocol["MEDIA"] == {"TEXT": wire.MEDIA_TEXT, "VOICE": wire.MEDIA_VOICE,
                                 "PICTURE": wire.MEDIA_PICTURE, "FILE": wire.MEDIA_FILE,
                                 "NOTICE": wire.MEDIA_NOTICE}
    assert protocol["GROUP_EVENTS"] == list(wire.GROUP_EVENTS)


def _client_files() -> list[Path]:
    return sorted(p for p in CLIENT.rglob("*") if p.suffix in (".js", ".html")
                  and p.name not in ("protocol.js", "docs.js"))


# A frame field compared with, or set to, a number: the names in protocol.js say it instead.
BARE_NUMBER = re.compile(r"\b(?:cmd|tcmd|media)\s*(?:===?|!==?|:)\s*\d")
CLOSE_NUMBER = re.compile(r"\b(?:close\(|code\s*===?\s*)\s*\d{4}")


def test_no_bare_frame_numbers_in_the_client() -> None:
    found = []
    for path in _client_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BARE_NUMBER.search(line) or CLOSE_NUMBER.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_bare_number_check_catches_a_literal() -> None:
    """The scan above would notice the old style, not just pass on anything."""
    for line in ("if (cmd === 100) {", "this.sendRaw({ cmd: 0 });", "msg.media === 4",
                 "ws.close(1000, 'bye')", "event.code === 4001"):
        assert BARE_NUMBER.search(line) or CLOSE_NUMBER.search(line), line


def test_upload_types_are_the_servers() -> None:
    source = (CLIENT / "upload.js").read_text(encoding="utf-8")
    match = re.search(r"var TYPES = (\[[^\]]*\]);", source)
    assert match, "asset/js/upload.js has no TYPES list"
    types = json.loads(match.group(1).replace("'", '"'))
    assert sorted(types) == sorted(mime for _, mime in uploads.PICTURE_FORMATS.values())
    # ... and it is the only list: no other client file spells out accepted types.
    for path in _client_files():
        if path.name != "upload.js":
            assert "image/png" not in path.read_text(encoding="utf-8"), path
