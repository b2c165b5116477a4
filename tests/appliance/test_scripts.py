"""The shell scripts pass shellcheck (when it is installed; CI installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.appliance.helpers import REPO

SCRIPTS = ["build_binary.sh", "make_release.sh", "install.sh", "uninstall.sh"]


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but shellcheck is missing (apt-get install shellcheck)")
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, *(str(REPO / "scripts" / name) for name in SCRIPTS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_posix_sh_where_they_say_so() -> None:
    # install.sh and uninstall.sh run under /bin/sh (dash on Debian), not only bash.
    for name in ("install.sh", "uninstall.sh"):
        assert (REPO / "scripts" / name).read_text().startswith("#!/bin/sh\n")
        check = subprocess.run(["sh", "-n", str(REPO / "scripts" / name)], capture_output=True,
                               text=True, check=False)
        assert check.returncode == 0, check.stderr
