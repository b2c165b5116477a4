"""Runs the real imchat server with its test-only WebSocket echo endpoint switched on
(`[testing] websocket_echo = true`), on a throwaway SQLite database, for the Autobahn run.

    python scripts/autobahn/echo_server.py --port 9001
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="imchat-autobahn-"))
    os.environ.update({
        "IMCHAT_TESTING_WEBSOCKET_ECHO": "true",
        "IMCHAT_SERVER_HOST": args.host,
        "IMCHAT_SERVER_PORT": str(args.port),
        "IMCHAT_SERVER_MODE": "development",
        "IMCHAT_DATABASE_ENGINE": "sqlite",
        "IMCHAT_DATABASE_PATH": str(data / "imchat.db"),
        "IMCHAT_STORAGE_UPLOAD_DIR": str(data / "resource"),
        "IMCHAT_LOG_LEVEL": "WARNING",
    })
    from app.main import main as imchat

    sys.exit(imchat(["serve", "--config", str(ROOT / "config.toml")]))


if __name__ == "__main__":
    main()
