"""Where each per-image artifact lives, and the small JSON records stages leave behind.

One image's results sit in `<root>/<image_id>/`:

    aligned.png        the prepared input (align)
    e4e_latent.pt      the encoder's W+ latent, latent_avg added (encode)
    e4e.png            G(e4e latent) (encode)
    latent.pt          the final W+ latent (tune)
    tuned.safetensors  the compact tuning result (tune; only the latent for e4e / projection)
    recon.png          the tuned reconstruction (tune)
    tune.json          method, steps run, loss curve, batch size (tune)
    timing.json        tuning seconds and peak memory (tune): machine-dependent, so kept out
                       of every other file (.dvcignore'd: not part of DVC's hashes)
    loss.png           the tuning loss curve, method and steps in its title (tune)
    edits.png          the edit grid rendered with the tuned generator (edit)
    edits.json         what each edit does to every attribute, measured by the attribute
                       regressor, vs generated samples (edit; only with edit.regressor)
    compare.png        aligned | e4e | tuned, labelled, method and L2 on it (evaluate)
    metrics.json       the metric keys (evaluate; docs/output-contract.md#metricsjson)
    e4e_metrics.json   the same metrics for the e4e reconstruction (evaluate)
    status.json        state done | quarantined | failed, reason, content key (last)

plus `.stage-<name>.json` markers ({key, state, reason}) that make a re-run skip a stage
whose inputs and parameters did not change. The Prefect flow keeps every stage in one root;
the DVC pipeline gives each stage its own root (a stage's `outs` must not overlap), which is
what `stage_roots` is for.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from gani import io
from gani.redact import redact_obj

STAGES = ("align", "encode", "tune", "edit", "evaluate")

ARTIFACTS: dict[str, tuple[str, str]] = {
    "aligned": ("align", "aligned.png"),
    "e4e_latent": ("encode", "e4e_latent.pt"),
    "e4e": ("encode", "e4e.png"),
    "latent": ("tune", "latent.pt"),
    "tuned": ("tune", "tuned.safetensors"),
    "recon": ("tune", "recon.png"),
    "tune_info": ("tune", "tune.json"),
    "timing": ("tune", "timing.json"),
    "loss_curve": ("tune", "loss.png"),
    "edits": ("edit", "edits.png"),
    "edit_effects": ("edit", "edits.json"),
    "compare": ("evaluate", "compare.png"),
    "metrics": ("evaluate", "metrics.json"),
    "e4e_metrics": ("evaluate", "e4e_metrics.json"),
    "status": ("evaluate", "status.json"),
}

# written only by some profiles: edits.json needs edit.regressor (the demo's testbed);
# timing.json is a record of the cost, not a result: .dvcignore keeps it out of DVC's
# hashes, so `dvc checkout` of the tune stage's outs does not bring it back
OPTIONAL_ARTIFACTS = frozenset({"edit_effects", "timing"})

SUMMARY_FILE = "summary.json"
STATES = ("done", "quarantined", "failed")


class Layout:
    """Maps (image id, artifact) to a URI under the output root (or a stage's own root)."""

    def __init__(self, root: str, stage_roots: Optional[Mapping[str, str]] = None,
                 storage_options: Optional[Mapping[str, Any]] = None):
        self.root = str(root).rstrip("/") or "/"
        self.stage_roots = dict(stage_roots or {})
        unknown = set(self.stage_roots) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages in stage_roots: {sorted(unknown)}")
        self.storage_options = dict(storage_options or {})

    def stage_root(self, stage: str) -> str:
        return self.stage_roots.get(stage, self.root)

    def image_dir(self, image_id: str, stage: str = "evaluate") -> str:
        _check_id(image_id)
        return io.join(self.stage_root(stage), image_id)

    def uri(self, image_id: str, artifact: str) -> str:
        stage, name = ARTIFACTS[artifact]
        return io.join(self.image_dir(image_id, stage), name)

    def marker_uri(self, image_id: str, stage: str) -> str:
        return io.join(self.image_dir(image_id, stage), f".stage-{stage}.json")

    @property
    def summary_uri(self) -> str:
        return io.join(self.stage_root("evaluate"), SUMMARY_FILE)

    # ------------------------------------------------------------------ records

    def read_marker(self, image_id: str, stage: str) -> Optional[dict]:
        return io.read_json(self.marker_uri(image_id, stage), self.storage_options)

    def write_marker(self, image_id: str, stage: str, key: str, state: str = "done",
                     reason: Optional[str] = None, **extra: Any) -> None:
        record = {"stage": stage, "key": key, "state": state, "reason": reason,
                  **redact_obj(extra)}   # a detail quoting an exception: no secret in it
        io.write_json(self.marker_uri(image_id, stage), record, self.storage_options)

    def read_status(self, image_id: str) -> Optional[dict]:
        return io.read_json(self.uri(image_id, "status"), self.storage_options)

    def write_status(self, image_id: str, state: str, reason: Optional[str], key: str,
                     **extra: Any) -> dict:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        record = {"image_id": image_id, "state": state, "reason": reason, "key": key,
                  **redact_obj(extra)}
        io.write_json(self.uri(image_id, "status"), record, self.storage_options)
        return record

    def read(self, image_id: str, artifact: str) -> bytes:
        return io.read_bytes(self.uri(image_id, artifact), self.storage_options)

    def write(self, image_id: str, artifact: str, data: bytes) -> str:
        uri = self.uri(image_id, artifact)
        io.write_bytes(uri, data, self.storage_options)
        return uri

    def exists(self, image_id: str, artifact: str) -> bool:
        return io.exists(self.uri(image_id, artifact), self.storage_options)


def _check_id(image_id: str) -> None:
    """Ids come from `io.image_ids`; refuse anything that could leave the root anyway."""
    if (not image_id or "/" in image_id or "\\" in image_id or image_id in (".", "..")
            or image_id.startswith(".") or len(image_id) > 200):
        raise ValueError(f"unsafe image id {image_id!r}")
