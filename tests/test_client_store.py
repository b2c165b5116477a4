"""The web client's DOM-free store (asset/js/store/) under node's test runner, with no window
or document: tests/client/store.test.js. Skipped without node, failed without it under CI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.harness import unavailable

TESTS = Path(__file__).resolve().parent / "client" / "store.test.js"


def test_store_runs_and_behaves_outside_a_browser() -> None:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    done = subprocess.run([node, "--test", str(TESTS)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout
