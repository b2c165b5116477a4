"""Where imchat's own files are: the source tree, or the unpacked one-file executable."""

from __future__ import annotations

import sys
from pathlib import Path

# PyInstaller unpacks a one-file build under sys._MEIPASS; the layout inside mirrors the repo.
ROOT = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
ASSET_DIR = ROOT / "asset"
VIEW_DIR = ROOT / "app" / "view"


def unpack_dir() -> Path | None:
    """The one-file executable's temporary unpack folder (deleted when the process exits), or
    None when running from source. Nothing the admin keeps may ever be stored under it."""
    folder = getattr(sys, "_MEIPASS", None)
    return Path(folder).resolve() if folder else None
