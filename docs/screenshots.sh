#!/usr/bin/env bash
# The MLflow screenshots of docs/mlflow.md (docs/img/mlflow-*.png), redone from scratch:
#
#   docs/screenshots.sh            # needs .venv (make demo) and chromium (apt-get install chromium)
#
# 1. `gani demo` into a temporary folder, tracked in a temporary SQLite MLflow store (the
#    repository's mlflow.db and outputs/ are not touched);
# 2. `mlflow server` on a free local port over that store;
# 3. docs/screenshots.py drives the system's Chromium with Playwright through the pages
#    docs/mlflow.md shows: the experiment's runs table with its metric columns (the
#    classic-view link the CLI prints, tracking.client.ui_link), a done child's page
#    (description, tags), its Model metrics tab (the log_image cards), the chart view's
#    Image grid of every child side by side, compare-runs of the done children and a
#    quarantined child;
# 4. each PNG re-encoded with Pillow (palette of 256 colours when that is smaller) so
#    that it stays under 300 KB.
#
# Playwright: used from the venv when it is installed there, else pip-installed once into
# $GANI_SHOT_PW (default <work folder>/pw) with `pip install --target`; its own browser
# download is not needed (the system's chromium is launched; GANI_SHOT_CHROMIUM overrides).
# GANI_SHOT_STEPS (default: the demo profile's) shortens tuning; GANI_SHOT_TIMEOUT_MS
# (default 60000) is how long a page may take to show what is waited for; GANI_SHOT_KEEP=1
# keeps the temporary folder (printed) for a look at the store, and GANI_SHOT_WORK=<that
# folder> takes the screenshots again from it without a new demo run, GANI_SHOT_ONLY=<name>
# only that one (e.g. mlflow-child-images).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="$REPO/.venv/bin/python"
IMG="$REPO/docs/img"
WORK="${GANI_SHOT_WORK:-$(mktemp -d /tmp/gani-shots.XXXXXX)}"
SERVER_PID=""
SHOT_PID=""

# the server and the browser run in their own process groups (setsid): ended as groups
stop() {
    if [ -n "$1" ]; then kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
    stop "$SHOT_PID"
    stop "$SERVER_PID"
    if [ "${GANI_SHOT_KEEP:-0}" = 1 ] || [ -n "${GANI_SHOT_WORK:-}" ]; then echo "kept $WORK"
    else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# 1. a tracked night: the demo (5 procedural faces, the astronaut, 2 broken files)
STORE="sqlite:///$WORK/mlflow.db"
SETS=(--set "tracking.uri=$STORE")
if [ -n "${GANI_SHOT_STEPS:-}" ]; then SETS+=(--set "tune.steps=$GANI_SHOT_STEPS"); fi
if [ -z "${GANI_SHOT_WORK:-}" ]; then
    (cd "$WORK" && "$REPO/.venv/bin/gani" demo --out "$WORK/out" "${SETS[@]}" > "$WORK/demo.log" 2>&1) \
        || { cat "$WORK/demo.log"; exit 1; }
fi

# 2. the MLflow server on a free port (artifacts: the store's own locations under $WORK)
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$WORK" && exec setsid "$REPO/.venv/bin/mlflow" server --backend-store-uri "$STORE" \
    --host 127.0.0.1 --port "$PORT" --workers 1 > "$WORK/server.log" 2>&1) &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 120); do
    if "$PY" -c "import urllib.request as u; u.urlopen('$URL/health', timeout=2)" 2>/dev/null; then break; fi
    sleep 1
done

# 3. screenshots, 4. small PNGs (docs/screenshots.py)
PW="${GANI_SHOT_PW:-$WORK/pw}"
PYPATH="$REPO"
if ! "$PY" -c "import playwright" 2>/dev/null; then
    if ! PYTHONPATH="$PW" "$PY" -c "import playwright" 2>/dev/null; then
        "$PY" -m pip install --quiet --target "$PW" playwright > "$WORK/pip.log" 2>&1 \
            || { cat "$WORK/pip.log"; exit 1; }
    fi
    PYPATH="$REPO:$PW"
fi
mkdir -p "$IMG"
PYTHONPATH="$PYPATH" setsid "$PY" "$REPO/docs/screenshots.py" "$STORE" "$URL" "$WORK" "$IMG" &
SHOT_PID=$!
wait "$SHOT_PID"
SHOT_PID=""
