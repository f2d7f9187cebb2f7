#!/usr/bin/env bash
# The MLflow screenshots of docs/mlflow.md (docs/img/mlflow-*.png), redone from scratch:
#
#   docs/screenshots.sh            # needs .venv (make demo) and chromium (apt-get install chromium)
#
# 1. `gani demo` into a temporary folder, tracked in a temporary SQLite MLflow store (the
#    repository's mlflow.db and outputs/ are not touched);
# 2. `mlflow server` on a free local port over that store;
# 3. headless Chromium screenshots of the pages docs/mlflow.md shows: the experiment's runs
#    table (the classic-view link the CLI prints, tracking.client.ui_link), a done child's
#    page (description, tags, params, metrics), compare-runs of the done children and a
#    quarantined child;
# 4. each PNG re-encoded with Pillow (palette of 256 colours when that is smaller) so
#    that it stays under 300 KB.
#
# GANI_SHOT_STEPS (default: the demo profile's) shortens tuning; GANI_SHOT_BUDGET_MS (default
# 30000) is Chromium's virtual-time budget per page (raise it when a PNG shows a spinner);
# GANI_SHOT_KEEP=1 keeps the temporary folder (printed) for a look at the store, and
# GANI_SHOT_WORK=<that folder> takes the screenshots again from it without a new demo run,
# GANI_SHOT_ONLY=<name> only that one (e.g. mlflow-child-run).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="$REPO/.venv/bin/python"
IMG="$REPO/docs/img"
BUDGET="${GANI_SHOT_BUDGET_MS:-30000}"
CHROMIUM="$(command -v chromium || command -v chromium-browser || command -v google-chrome)"
WORK="${GANI_SHOT_WORK:-$(mktemp -d /tmp/gani-shots.XXXXXX)}"
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
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
(cd "$WORK" && exec "$REPO/.venv/bin/mlflow" server --backend-store-uri "$STORE" \
    --host 127.0.0.1 --port "$PORT" --workers 1 > "$WORK/server.log" 2>&1) &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 120); do
    if "$PY" -c "import urllib.request as u; u.urlopen('$URL/health', timeout=2)" 2>/dev/null; then break; fi
    sleep 1
done

# the pages: experiment, a done child, a quarantined child, two done children to compare
PAGES="$("$PY" - "$STORE" "$URL" <<'EOF'
import json
import sys
from urllib.parse import quote

from mlflow.tracking import MlflowClient

from tracking.client import ui_link

store, url = sys.argv[1], sys.argv[2]
client = MlflowClient(store)
exp = next(e for e in client.search_experiments() if e.name.startswith("gani-"))
runs = client.search_runs([exp.experiment_id], "tags.`gani.kind` = 'image'",
                          order_by=["tags.image_id ASC"])
done = [r for r in runs if r.data.tags.get("state") == "done"]
bad = [r for r in runs if r.data.tags.get("state") == "quarantined"]
child = next((r for r in done if r.data.tags.get("image_id") == "astronaut"), done[0])
e, c = exp.experiment_id, child.info.run_id
compare = json.dumps([r.info.run_id for r in done[:4]])
classic = "workflowType=machine_learning"
# name, window width, address (the runs table is wide: its metric columns, once chosen under
# Columns, come after the run name, dates, dataset, duration, source and models). Not here:
# the pages drawn as chart cards (a run's Model metrics tab, where the log_image images are,
# and the experiment's chart view `#/experiments/<id>/runs?compareRunsMode=CHART`): under
# headless Chromium they stayed loading spinners even with a 30-s budget, so they are
# checked by hand (docs/mlflow.md).
pages = [
    ("mlflow-runs", 2200, ui_link(url, e)),
    ("mlflow-child-run", 1500, ui_link(url, e, c)),
    ("mlflow-compare-runs", 1500, f"{url}/#/compare-runs?runs={quote(compare)}"
                                  f"&experiments={quote(json.dumps([e]))}&{classic}"),
]
if bad:
    pages.append(("mlflow-quarantined-run", 1500, ui_link(url, e, bad[0].info.run_id)))
for name, width, page in pages:
    print(name, width, page)
EOF
)"

# 3. screenshots, 4. small PNGs
mkdir -p "$IMG"
while read -r name width page; do
    if [ -n "${GANI_SHOT_ONLY:-}" ] && [ "$name" != "$GANI_SHOT_ONLY" ]; then continue; fi
    "$CHROMIUM" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size="$width",950 --virtual-time-budget="$BUDGET" \
        --screenshot="$WORK/$name.png" "$page" > "$WORK/chromium-$name.log" 2>&1
    "$PY" - "$WORK/$name.png" "$IMG/$name.png" <<'EOF'
import io
import sys

from PIL import Image

src, dst = sys.argv[1], sys.argv[2]
im = Image.open(src).convert("RGB")
candidates = []
for img in (im, im.quantize(256, method=Image.Quantize.MEDIANCUT)):
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    candidates.append(buf.getvalue())
data = min(candidates, key=len)
if len(data) > 300_000:
    sys.exit(f"{dst}: {len(data)} bytes, over 300 KB")
open(dst, "wb").write(data)
print(f"{dst}: {len(data) // 1024} KB")
EOF
    echo "  $page"
done <<< "$PAGES"
