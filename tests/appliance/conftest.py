"""Appliance fixtures: the one-file binary built once per session with scripts/build_binary.sh
(or taken from IMCHAT_TEST_BINARY), and scripts/install.sh run into a temporary DESTDIR root.

Every test here is marked `appliance` and `slow` (deselect with `-m "not appliance"`). Without
PyInstaller they are skipped with the reason; under CI=true that is a failure instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance.helpers import REPO, Installed, run_install
from tests.harness import unavailable

BUILD_TIMEOUT = 600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "appliance: builds/installs the one-file binary (slow)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.appliance)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def binary() -> Path:
    """dist/imchat, freshly built (about 40 s), or $IMCHAT_TEST_BINARY when given."""
    given = os.environ.get("IMCHAT_TEST_BINARY")
    if given:
        path = Path(given).resolve()
        if not os.access(path, os.X_OK):
            pytest.fail(f"IMCHAT_TEST_BINARY={given} is not an executable")
        return path
    if importlib.util.find_spec("PyInstaller") is None:
        unavailable("PyInstaller is not installed (pip install -e '.[binary]'): "
                     "the appliance tests need it to build the binary")
    started = time.monotonic()
    try:
        build = subprocess.run(["bash", str(REPO / "scripts" / "build_binary.sh")], cwd=REPO,
                               capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                               check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/build_binary.sh took more than {BUILD_TIMEOUT} s")
    if build.returncode != 0:
        pytest.fail(f"scripts/build_binary.sh failed ({build.returncode}):\n"
                    f"{build.stdout[-4000:]}\n{build.stderr[-8000:]}")
    path = REPO / "dist" / "imchat"
    assert path.is_file(), build.stdout
    print(f"\nbuilt {path} ({path.stat().st_size / 2**20:.1f} MiB) in "  # noqa: T201
          f"{time.monotonic() - started:.0f} s")
    return path


@pytest.fixture(scope="session")
def installed(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """scripts/install.sh run with DESTDIR into a temporary root."""
    root = tmp_path_factory.mktemp("destdir")
    result = run_install(root, binary)
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    yield Installed(root)
