"""Where imchat's own files are: the source tree, or the unpacked one-file executable."""

from __future__ import annotations

import sys
from pathlib import Path

# PyInstaller unpacks a one-file build under sys._MEIPASS; the layout inside mirrors the repo.
ROOT = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
ASSET_DIR = ROOT / "asset"
VIEW_DIR = ROOT / "app" / "view"
DEFAULT_CONFIG = ROOT / "config.toml"
