"""What a person sees of a run in the MLflow UI besides its numbers: the descriptions
(`mlflow.note.content`, markdown) of the experiment, the parent and each child run, and
the images a child logs with `log_image` (MLflow's image grid, compared across runs).

A quarantined or failed image's child shows a thumbnail of its input under the key `input`
(the aligned input when the image got that far, else the rejected file itself, or a card
naming the reason when the file cannot be decoded) and the reason in its description.
"""
from __future__ import annotations

import io as _bytes_io
from typing import Any, Mapping, Optional

from gani import io
from gani.stages.layout import Layout

# log_image key -> the image's artifact (gani.stages.layout.ARTIFACTS). Stable keys, so
# MLflow lines the same picture up across runs.
IMAGE_KEYS = {"input": "aligned", "e4e_start": "e4e", "tuned": "recon",
              "compare": "compare", "edits": "edits", "loss": "loss_curve"}
THUMBNAIL_SIDE = 256
MAX_THUMBNAIL_SOURCE_BYTES = 64 * 2**20    # larger rejected files get a card, not a decode

STATE_WORDS = {
    "done": "done",
    "quarantined": "quarantined: a bad input, not retried while the file and the settings "
                   "stay the same (run status KILLED)",
    "failed": "failed: an error, retried by the next run (run status FAILED)",
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def experiment_description(name: str, dataset: str, profile: str) -> str:
    return (f"GANI inversion of the dataset **{dataset}** with the profile **{profile}** "
            f"(`{name}`): one parent run per night, one child run per image (metrics, "
            f"params, images under Artifacts and the image grid). Quarantined images are "
            f"KILLED runs, failed ones FAILED; the reason is in each run's description.")


def parent_description(dataset: str, profile: str, method: str, steps: int,
                       input_uri: str, output_uri: str, n_images: int, n_todo: int) -> str:
    """The parent's description while it runs: what the night does."""
    return (f"Night of **{dataset}**, profile **{profile}**, tune.method **{method}** "
            f"({steps} steps). Input `{input_uri}`, output `{output_uri}`: {n_images} images, "
            f"{n_todo} to process; one child run per image.")


def final_parent_description(opening: str, summary: Mapping[str, Any]) -> str:
    """The parent's description at the end: the opening line plus counts and means."""
    counts = summary.get("counts") or {}
    means = summary.get("means") or {}
    lines = [opening, "",
             f"**{counts.get('done', 0)} done, {counts.get('quarantined', 0)} quarantined, "
             f"{counts.get('failed', 0)} failed**; wall time {_fmt(summary.get('seconds'))} s "
             f"(`wall_seconds`)."]
    shown = [f"{k} {_fmt(means[k])}" for k in ("l2", "ms_ssim", "lpips", "id", "locality_l2")
             if means.get(k) is not None]
    if shown:
        lines.append("Means over done images: " + ", ".join(shown) + ".")
    for kind in ("quarantined", "failed"):
        for image_id, reason in sorted((summary.get(kind) or {}).items())[:20]:
            lines.append(f"- {kind}: `{image_id}` ({reason})")
    return "\n".join(lines)


def child_description(state: str, reason: Optional[str], detail: Optional[str], source: str,
                      metrics: Mapping[str, Any], e4e: Mapping[str, Any], method: str,
                      steps: int) -> str:
    """An image's description: its state and reason in words, or its key results."""
    head = f"**{STATE_WORDS.get(state, state)}**"
    if state == "done":
        return (f"{head}: `{source}`, {method} ({steps} steps). L2 {_fmt(e4e.get('l2'))} at "
                f"the e4e start -> {_fmt(metrics.get('l2'))} tuned; MS-SSIM "
                f"{_fmt(metrics.get('ms_ssim'))}; drift (locality_l2) "
                f"{_fmt(metrics.get('locality_l2'))}; tuning {_fmt(metrics.get('seconds'))} s.")
    text = f"{head}\n\nreason: `{reason or 'unknown'}` — source `{source}`"
    if detail:
        text += f"\n\n{str(detail)[:1500]}"
    return text


def _decode_thumbnail(data: bytes):
    """A thumbnail of image bytes, or None when they do not decode (truncated, not an
    image, too many pixels)."""
    from PIL import Image

    try:
        with Image.open(_bytes_io.BytesIO(data)) as img:
            img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            thumb = img.convert("RGB")
            thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return thumb
    except Exception:  # noqa: BLE001 - a rejected file may be anything
        return None


def reason_card(state: str, reason: Optional[str]):
    """A grey card naming the state and reason: the thumbnail of an input that does not
    decode."""
    from PIL import Image, ImageDraw

    card = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2), (90, 90, 90))
    draw = ImageDraw.Draw(card)
    draw.text((10, 20), state.upper(), fill=(255, 210, 80))
    draw.text((10, 50), f"reason: {reason or 'unknown'}", fill=(255, 255, 255))
    draw.text((10, 80), "the input does not decode", fill=(220, 220, 220))
    return card


def rejected_input(source_uri: str, state: str, reason: Optional[str]):
    """The thumbnail of a quarantined or failed image's source file (a card when it is too
    large, unreadable or not an image)."""
    if reason == "too_large":
        return reason_card(state, reason)
    try:
        if (io.size(source_uri) or 0) > MAX_THUMBNAIL_SOURCE_BYTES:
            return reason_card(state, reason)
        data = io.read_bytes(source_uri)
    except Exception:  # noqa: BLE001
        return reason_card(state, reason)
    return _decode_thumbnail(data) or reason_card(state, reason)


def child_images(layout: Layout, image_id: str, source_uri: str, state: str,
                 reason: Optional[str]) -> dict[str, Any]:
    """{log_image key: PIL image} of what the image's folder holds (`IMAGE_KEYS`); a
    quarantined or failed image without its aligned input gets the rejected file's
    thumbnail as `input`."""
    from PIL import Image

    out: dict[str, Any] = {}
    for key, artifact in IMAGE_KEYS.items():
        try:
            data = layout.read(image_id, artifact)
        except (FileNotFoundError, OSError):
            continue
        try:
            with Image.open(_bytes_io.BytesIO(data)) as img:
                out[key] = img.convert("RGB")
        except Exception:  # noqa: BLE001 - a picture that does not decode is left out
            continue
    if state != "done" and "input" not in out:
        out["input"] = rejected_input(source_uri, state, reason)
    return out
