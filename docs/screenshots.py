"""The screenshots of docs/mlflow.md, taken with Playwright (step 3 of docs/screenshots.sh).

    python docs/screenshots.py STORE URL OUT_DIR IMG_DIR     # PYTHONPATH must reach playwright

STORE is the demo's MLflow store, URL the `mlflow server` over it. Each page is shot into
OUT_DIR, then re-encoded into IMG_DIR (palette of 256 colours when smaller), under 300 KB.
Chromium is the system's (GANI_SHOT_CHROMIUM, else `chromium` on PATH): Playwright's own
browser download is not needed. GANI_SHOT_ONLY=<name> takes only that page.

The browser starts with MLflow's local storage as the UI leaves it after a user's choices
(its key for MLflow 3.17, checked on the page): the metric columns and the `state` tag picked
under Columns, the night's parent run expanded, the Assistant panel closed. The pages
drawn as chart cards are waited for until their images have loaded.
"""
import io
import json
import os
import re
import shutil
import sys
from urllib.parse import quote

from mlflow.tracking import MlflowClient
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from tracking.client import ui_link
from tracking.describe import IMAGE_KEYS

MAX_BYTES = 300_000
TIMEOUT_MS = int(os.environ.get("GANI_SHOT_TIMEOUT_MS", "60000"))
GRID_KEYS = ["input", "e4e_start", "tuned", "compare"]   # the cross-run grid's rows
CARD = "experiment-view-compare-runs-card"     # data-testid of a chart card (MLflow 3.17)


def find_runs(store: str):
    client = MlflowClient(store)
    exp = next(e for e in client.search_experiments() if e.name.startswith("gani-"))
    runs = client.search_runs([exp.experiment_id], "tags.`gani.kind` = 'image'",
                              order_by=["tags.image_id ASC"])
    done = [r for r in runs if r.data.tags.get("state") == "done"]
    bad = [r for r in runs if r.data.tags.get("state") == "quarantined"]
    child = next((r for r in done if r.data.tags.get("image_id") == "astronaut"), done[0])
    parent = child.data.tags["mlflow.parentRunId"]
    metrics = sorted({k for r in done for k in r.data.metrics})
    return exp.experiment_id, parent, child, done, bad, metrics


def local_storage(experiment_id: str, parent: str, metrics: list[str]) -> dict[str, str]:
    """What MLflow 3.17's UI stores after Columns -> the metrics and `state`, the parent
    expanded (⊞), and the Assistant closed (×)."""
    view = {"selectedColumns": [f"metrics.`{m}`" for m in metrics] + ["tags.`state`"],
            "runsExpanded": {parent: True}}
    return {f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState':
            json.dumps(view),
            "mlflow.assistant.panelOpen_v1": "false",
            "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}


def images_loaded(page: Page, scope: str, at_least: int) -> None:
    """Wait until `scope` holds at least `at_least` images, all decoded."""
    page.wait_for_function(
        """([scope, n]) => { const im = [...document.querySelectorAll(scope + ' img')];
                             return im.length >= n && im.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[scope, at_least], timeout=TIMEOUT_MS)


def shot_runs(page: Page, url: str, child_name: str, metrics: list[str]) -> None:
    page.goto(url, wait_until="load")
    page.get_by_role("link", name=child_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    header = page.get_by_text(metrics[-1], exact=True).first
    header.wait_for(timeout=TIMEOUT_MS)     # the seeded columns took: else the key changed
    page.get_by_text(re.compile(r"^\d+(\.\d+)?$")).first.wait_for(timeout=TIMEOUT_MS)


def shot_page(page: Page, url: str, text: str) -> None:
    page.goto(url, wait_until="load")
    page.get_by_text(text).first.wait_for(timeout=TIMEOUT_MS)


def shot_child_images(page: Page, url: str, keys: list[str]) -> None:
    """The run page's Model metrics tab, filtered to its image cards (an image card passes
    any chart filter; `image` matches no metric name), cards at their largest (the
    corner handle dragged down), each card scrolled to its image."""
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("image")
    cards = page.get_by_test_id(CARD)
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid={CARD}]').length == {len(keys)}",
                           timeout=TIMEOUT_MS)
    grow(page, cards.first)
    images_loaded(page, f"[data-testid={CARD}]", len(keys))
    page.evaluate(f"""() => document.querySelectorAll('[data-testid={CARD}] img')
                            .forEach(i => i.scrollIntoView({{block: 'nearest'}}))""")
    page.evaluate("() => window.scrollTo(0, 0)")


def grow(page: Page, card) -> None:
    """Drag a card's corner handle down: MLflow resizes every card of the section, up to
    its maximum height."""
    handle = card.locator("xpath=ancestor-or-self::*[contains(@class, 'react-resizable')][1]/*[last()]")
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 150, steps=10)
    page.mouse.move(x, y + 400, steps=10)
    page.mouse.up()
    page.wait_for_timeout(500)


def shot_chart_images(page: Page, url: str, keys: list[str], n_runs: int) -> None:
    """The experiment's chart view (the chart icon next to the table icon), Add chart ->
    Image grid with the keys GRID_KEYS and the run parameters off, found among the image
    cards (chart filter `image`) and shown full screen: the
    images of every run side by side, one row per key."""
    page.goto(url, wait_until="load")
    page.locator("label:has(input[value=CHART])").click()
    page.get_by_role("button", name="Add chart").first.click(timeout=TIMEOUT_MS)
    page.get_by_role("menuitem", name="Image grid").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox", name=re.compile("^Images")).click()
    for key in keys:
        page.get_by_role("option", name=key, exact=True).click()
    page.keyboard.press("Escape")
    dialog.get_by_role("switch").click()          # Show run parameters: off
    dialog.get_by_role("button", name="Add chart").click()
    dialog.wait_for(state="hidden")
    page.get_by_placeholder("Search metric charts").fill("image")    # the image cards only
    card = page.get_by_test_id(CARD).filter(has=page.locator("h4", has_text="Image grid"))
    card.scroll_into_view_if_needed()
    card.get_by_role("button").first.click()      # full screen
    images_loaded(page, "[role=dialog]", n_runs * 3)


def small_png(src: str, dst: str) -> None:
    im = Image.open(src).convert("RGB")
    candidates = []
    for img in (im, im.quantize(256, method=Image.Quantize.MEDIANCUT)):
        buf = io.BytesIO()
        img.save(buf, "PNG", optimize=True)
        candidates.append(buf.getvalue())
    data = min(candidates, key=len)
    if len(data) > MAX_BYTES:
        sys.exit(f"{dst}: {len(data)} bytes, over 300 KB")
    with open(dst, "wb") as f:
        f.write(data)
    print(f"{dst}: {len(data) // 1024} KB")


def main(store: str, url: str, out: str, img: str) -> None:
    e, parent, child, done, bad, metrics = find_runs(store)
    c = child.info.run_id
    name = child.data.tags.get("mlflow.runName", child.info.run_name)
    keys = list(IMAGE_KEYS)
    classic = "workflowType=machine_learning"
    compare = json.dumps([r.info.run_id for r in done[:4]])
    # name, viewport (width, height), how to reach the page and what to wait for
    pages = [
        ("mlflow-runs", (2000, 950), lambda p: shot_runs(p, ui_link(url, e), name, metrics)),
        ("mlflow-child-run", (1500, 950), lambda p: shot_page(p, ui_link(url, e, c), "Description")),
        ("mlflow-child-images", (1800, 1300), lambda p: shot_child_images(p, ui_link(url, e, c), keys)),
        ("mlflow-chart-images", (1800, 1100),
         lambda p: shot_chart_images(p, ui_link(url, e), GRID_KEYS, len(done))),
        ("mlflow-compare-runs", (1500, 950),
         lambda p: shot_page(p, f"{url}/#/compare-runs?runs={quote(compare)}"
                                f"&experiments={quote(json.dumps([e]))}&{classic}",
                             "Parallel Coordinates Plot")),
    ]
    if bad:
        pages.append(("mlflow-quarantined-run", (1500, 950),
                      lambda p: shot_page(p, ui_link(url, e, bad[0].info.run_id), "quarantined")))
    only = os.environ.get("GANI_SHOT_ONLY")
    chromium = (os.environ.get("GANI_SHOT_CHROMIUM") or shutil.which("chromium")
                or shutil.which("chromium-browser") or shutil.which("google-chrome"))
    seed = local_storage(e, parent, metrics)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for shot, (w, h), go in pages:
                if only and shot != only:
                    continue
                ctx = browser.new_context(viewport={"width": w, "height": h})
                ctx.add_init_script(f"(() => {{ const s = {json.dumps(seed)};"
                                    " for (const k in s) localStorage.setItem(k, s[k]); })()")
                page = ctx.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                go(page)
                page.wait_for_timeout(1500)       # the last layout and fade-ins
                raw = os.path.join(out, f"{shot}.png")
                page.screenshot(path=raw)
                small_png(raw, os.path.join(img, f"{shot}.png"))
                print(f"  {page.url}")
                ctx.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
