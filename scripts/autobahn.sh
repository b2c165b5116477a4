#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn|Testsuite fuzzingclient (cases 1-7, 9, 10) against
# imchat's echo endpoint (scripts/autobahn/echo_server.py) and fails if any case FAILED.
#
# Needs pyenv's Python 2.7.18 (autobahntestsuite is Python 2 only). The 2.7 virtualenv is
# made once under ${AUTOBAHN_VENV:-~/.cache/imchat/autobahn-py27}. Without Python 2.7 the
# run is SKIPPED (exit 0), except under CI=true, where it fails unless AUTOBAHN_REQUIRED=0.
#
# Environment: AUTOBAHN_CASES (JSON list, default from scripts/autobahn/fuzzingclient.json),
# AUTOBAHN_EXCLUDE (JSON list of cases to skip), AUTOBAHN_OUT (report directory, default a
# temp dir; the full HTML report stays out of the repo), AUTOBAHN_SUMMARY (default
# docs/autobahn/summary.md), PYTHON (Python 3 with imchat's deps, default .venv/bin/python).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
PYENV_ROOT=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
PY27=$PYENV_ROOT/versions/2.7.18/bin/python2.7
VENV27=${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/imchat/autobahn-py27}
OUT=${AUTOBAHN_OUT:-$(mktemp -d -t imchat-autobahn.XXXXXX)}
SUMMARY=${AUTOBAHN_SUMMARY:-$ROOT/docs/autobahn/summary.md}

if [ ! -x "$PY27" ]; then
    if [ "${CI:-}" = "true" ] && [ "${AUTOBAHN_REQUIRED:-1}" != "0" ]; then
        echo "FAILED: python 2.7 not available at $PY27 (CI=true requires the Autobahn run)" >&2
        exit 1
    fi
    echo "SKIPPED: python 2.7 not available (looked for $PY27)"
    exit 0
fi

if [ ! -x "$VENV27/bin/wstest" ]; then
    echo "autobahn: creating the Python 2.7 virtualenv in $VENV27 (once)"
    mkdir -p "$(dirname "$VENV27")"
    INSTALL_LOG=$(dirname "$VENV27")/autobahn-install.log
    {
        if ! "$PY27" -m virtualenv --version; then
            # virtualenv 20.21 is the last release that still creates Python 2.7 environments.
            "$PY27" -m pip install --user "virtualenv<20.22"
        fi
        "$PY27" -m virtualenv "$VENV27"
        "$VENV27/bin/pip" install --disable-pip-version-check autobahntestsuite
    } >"$INSTALL_LOG" 2>&1 || {
        echo "autobahn: installing autobahntestsuite failed; see $INSTALL_LOG" >&2
        tail -20 "$INSTALL_LOG" >&2
        rm -rf "$VENV27"
        exit 1
    }
fi
WSTEST_VERSION=$("$VENV27/bin/wstest" -a 2>/dev/null | paste -sd' ' - | sed 's/ AutobahnTestSuite/, AutobahnTestSuite/')

PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$OUT"
SERVER_LOG=$OUT/echo_server.log
"$PYTHON" "$ROOT/scripts/autobahn/echo_server.py" --port "$PORT" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
cleanup() {
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

for _ in $(seq 100); do
    if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "autobahn: echo server died; its log:" >&2
        cat "$SERVER_LOG" >&2
        exit 1
    fi
    sleep 0.1
done

SPEC=$OUT/fuzzingclient.json
"$PYTHON" - "$ROOT/scripts/autobahn/fuzzingclient.json" "$SPEC" "$OUT/reports" "$PORT" <<'EOF'
import json, os, sys
template, target, outdir, port = sys.argv[1:]
spec = json.loads(open(template).read().replace("@OUTDIR@", outdir).replace("@PORT@", port))
if os.environ.get("AUTOBAHN_CASES"):
    spec["cases"] = json.loads(os.environ["AUTOBAHN_CASES"])
if os.environ.get("AUTOBAHN_EXCLUDE"):
    spec["exclude-cases"] = json.loads(os.environ["AUTOBAHN_EXCLUDE"])
open(target, "w").write(json.dumps(spec, indent=2))
EOF

echo "autobahn: fuzzingclient against ws://127.0.0.1:$PORT/_test/echo (report in $OUT/reports)"
START=$(date +%s)
(cd "$OUT" && "$VENV27/bin/wstest" -m fuzzingclient -s "$SPEC") >"$OUT/wstest.log" 2>&1 || {
    echo "autobahn: wstest failed; last lines of its log:" >&2
    tail -20 "$OUT/wstest.log" >&2
    exit 1
}
RUNTIME=$(( $(date +%s) - START ))
echo "autobahn: wstest finished in ${RUNTIME}s"

EXCLUDED=$("$PYTHON" -c 'import json,sys; print(", ".join(json.load(open(sys.argv[1]))["exclude-cases"]))' "$SPEC")
"$PYTHON" "$ROOT/scripts/autobahn/summarize.py" "$OUT/reports/index.json" "$SUMMARY" \
    --runtime "wstest runtime ${RUNTIME}s" --wstest "$WSTEST_VERSION" --excluded "$EXCLUDED"
