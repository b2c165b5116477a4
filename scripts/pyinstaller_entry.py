"""Entry point of the one-file `imchat` executable built by scripts/build_binary.sh.

The server starts its workers (and multiprocessing's helper processes) with the `spawn` method:
each is a fresh copy of this executable, which `freeze_support()` (patched by PyInstaller's
runtime hook for every platform) recognises by its arguments and diverts before the CLI parses
them.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()

    from app.main import main

    sys.exit(main())
