#!/usr/bin/env bash
# Build dist/imchat: one self-contained executable (PyInstaller one-file) carrying the Python
# runtime, every dependency, app/view/ and asset/ (with asset/vendor/ when `make assets` made it).
#
# Usage: scripts/build_binary.sh            (from anywhere; works on the repository it sits in)
# Environment:
#   PYTHON         the interpreter whose packages go into the bundle (default: .venv/bin/python,
#                  else python3). It needs the project's dependencies and pyinstaller installed
#                  (pip install -e '.[binary]').
#   IMCHAT_STRIP   1 (default) strips debug symbols from bundled libraries; 0 keeps them.
# The result is checked by running `dist/imchat --version` from outside the source tree.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then
    PYTHON="$ROOT/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

if ! "$PYTHON" -c 'import PyInstaller' >/dev/null 2>&1; then
  echo "build_binary: PyInstaller is not installed for $PYTHON;" \
       "run: $PYTHON -m pip install -e '.[binary]'" >&2
  exit 3
fi

# The browser's third-party files (asset/vendor/) and the compiled templates (asset/build/) come
# from `make assets`; build them first when the project has a package.json, so the binary
# carries the same web client as `make run`.
if [ -f package.json ] && [ ! -f asset/vendor/.built ]; then
  echo "build_binary: asset/vendor/ missing; running make assets" >&2
  make --no-print-directory -s assets
fi

# The search indexer's C parts (app/service/search/_spacing.c and _postings.c, built by
# `pip install -e .` where a C compiler and SQLite's headers are present): a binary without them
# would index in Python, two to three times the indexing's CPU (bench/NOTES.md), so a release is
# not built without them.
if ! "$PYTHON" -c 'from app.service.search import mysql_index as m, sqlite_index as s
raise SystemExit(not (s.spacing_in_c() and m.postings_in_c()))' >/dev/null 2>&1; then
  echo "build_binary: app/service/search/_spacing.c or _postings.c is not built for $PYTHON" \
       "(needs gcc and libsqlite3-dev); install them and run:" \
       "$PYTHON -m pip install -e '.[binary]'" >&2
  exit 3
fi

started=$(date +%s)
# --noconfirm: replace a previous build; the work folder is kept so a rebuild is incremental.
"$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
  --workpath "$ROOT/build/pyinstaller" --distpath "$ROOT/dist" \
  "$ROOT/scripts/imchat.spec"

# Smoke check from a folder with no source tree and no PYTHONPATH: the binary must stand alone.
version=$(cd / && env -u PYTHONPATH -u PYTHONHOME "$ROOT/dist/imchat" --version)
size=$(du -h "$ROOT/dist/imchat" | cut -f1)
echo "build_binary: built $ROOT/dist/imchat ($version, $size) in $(( $(date +%s) - started )) s"
