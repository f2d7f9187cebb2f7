"""Numerical faults in tuning, through the pipeline: NaN/inf stops one image with a reason
while its batch mates finish; device out-of-memory halves the batch and the results equal an
unbatched run; an image that does not fit even alone fails with `out_of_memory`.

Faults are injected where they happen on a GPU: in the tuner's generator forward
(`gani.tuning.common.synth`, the forward of every tuning step and of the locality
regularizer) and in the encoder's output on disk. The reference is a clean run with
tune.batch_size=1 on the same images; the faulty runs start from its aligned/encoded
outputs (align and encode are not what is tested, and this keeps the runs short).
"""
from __future__ import annotations

import io as _io
import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch

import gani.tuning.api as tuning_api
import gani.tuning.common as tuning_common
from gani.stages import Layout, run_pipeline
from gani.stages.common import load_tensor, tensor_bytes
from gani.stages.demo_data import demo_images

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png")
IDS = ("astronaut", "astronaut_mirrored", "astronaut_tilted")
PREPARED = ("aligned.png", "e4e_latent.pt", "e4e.png", ".stage-align.json",
            ".stage-encode.json")
DONE_FILES = ("aligned.png", "e4e_latent.pt", "e4e.png", "latent.pt", "tuned.safetensors",
              "recon.png", "tune.json", "loss.png", "edits.png", "compare.png", "metrics.json",
              "e4e_metrics.json", "status.json")


# --------------------------------------------------------------------------- helpers

def unreadable_artifacts(root: Path, image_id: str) -> list[str]:
    """The files of a done image that are missing or do not parse."""
    from PIL import Image
    from safetensors.torch import load as load_safetensors

    bad = []
    for name in DONE_FILES:
        path = root / image_id / name
        try:
            data = path.read_bytes()
            if name.endswith(".png"):
                Image.open(_io.BytesIO(data)).verify()
            elif name.endswith(".pt"):
                t = load_tensor(data)
                assert torch.isfinite(t).all()
            elif name.endswith(".json"):
                json.loads(data)
            elif name.endswith(".safetensors"):
                load_safetensors(data)
        except Exception:  # noqa: BLE001 - anything unreadable is lost data
            bad.append(name)
    return bad


def data_lost(root: Path, summary: dict, good_ids) -> int:
    """Good images that did not finish, plus artifacts of done images that are unusable."""
    lost = 0
    for image_id in good_ids:
        status = json.loads((root / image_id / "status.json").read_text()) \
            if (root / image_id / "status.json").exists() else {}
        if status.get("state") != "done":
            lost += 1
        else:
            lost += len(unreadable_artifacts(root, image_id))
    return lost


def assert_same_result(root: Path, ref: Path, image_id: str, rtol: float = 1e-3) -> None:
    """The image's tuning curve, latent and metrics equal the reference run's."""
    got = json.loads((root / image_id / "tune.json").read_text())
    want = json.loads((ref / image_id / "tune.json").read_text())
    assert got["loss_curve"] == pytest.approx(want["loss_curve"], rel=rtol, abs=1e-6)
    for term, curve in want["parts"].items():
        assert got["parts"][term] == pytest.approx(curve, rel=rtol, abs=1e-6), term
    assert torch.allclose(load_tensor((root / image_id / "latent.pt").read_bytes()),
                          load_tensor((ref / image_id / "latent.pt").read_bytes()))
    m_got = json.loads((root / image_id / "metrics.json").read_text())
    m_want = json.loads((ref / image_id / "metrics.json").read_text())
    compared = [k for k, v in m_want.items()
                if v is not None and k not in ("seconds", "peak_mem_bytes")]
    assert "l2" in compared
    for k in compared:
        assert m_got[k] == pytest.approx(m_want[k], rel=rtol, abs=1e-5), k


def rows_of(w: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """[B] bool: which rows of a tuning batch's W+ latents are this image's latent."""
    if w.dim() != 3 or w.shape[1:] != latent.shape[1:]:
        return torch.zeros(w.shape[0], dtype=torch.bool)
    return (w.detach().cpu() == latent.cpu()).flatten(1).all(1)


def oom(where: str) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate 2.00 GiB ({where}; injected by the test)")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def base(tmp_path_factory, shrink):
    """The input folder, tiny settings, and a clean reference run with batch_size 1."""
    from gani.config import load_settings

    tmp = tmp_path_factory.mktemp("numeric")
    data = tmp / "photos"
    data.mkdir()
    files = demo_images()
    for name in IMAGES:
        (data / name).write_bytes(files[name])
    settings = shrink(load_settings(ROOT / "params.yaml", "demo_random"),
                      **{"tracking.enabled": "false"})
    ref = tmp / "reference"
    summary = run_pipeline(str(data), Layout(str(ref)), batched(settings, 1))
    assert summary["counts"] == {"done": len(IDS), "quarantined": 0, "failed": 0}
    return {"tmp": tmp, "data": data, "settings": settings, "ref": ref}


def prepared_root(base, name: str) -> Path:
    """A new output root holding the reference's align + encode outputs (and markers)."""
    root = base["tmp"] / name
    for image_id in IDS:
        (root / image_id).mkdir(parents=True)
        for f in PREPARED:
            shutil.copy2(base["ref"] / image_id / f, root / image_id / f)
    return root


def batched(settings, n: int):
    """The settings with tune.batch_size n (validated: resolved like `--set`)."""
    from gani.config import resolve

    dump = settings.model_dump(mode="json")
    return resolve({**dump, "profiles": {dump["profile"]: {}}}, dump["profile"],
                   [f"tune.batch_size={n}"])


def e4e_latent(root: Path, image_id: str) -> torch.Tensor:
    return load_tensor((root / image_id / "e4e_latent.pt").read_bytes())


# --------------------------------------------------------------------------- tests

def test_nonfinite_tuning_stops_that_image_batch_mates_done(base, monkeypatch, reliability):
    """One image's generator output turns NaN from tuning step 1 on (an overflow mid-run);
    another's encoder latent on disk holds inf (a diverged encoder). Both fail with
    tuning_nonfinite and say why; the third image of the same batch is done, and equal to
    the unbatched clean run."""
    root = prepared_root(base, "nan")
    nan_id, inf_id, good_id = "astronaut_mirrored", "astronaut_tilted", "astronaut"
    bad = e4e_latent(root, inf_id).clone()
    bad[0, 0, :4] = float("inf")
    (root / inf_id / "e4e_latent.pt").write_bytes(tensor_bytes(bad))
    target = e4e_latent(root, nan_id)
    real = tuning_common.synth
    seen = {"forwards": 0, "nan_forwards": 0}

    def synth(G, w, deltas=None, noise=None):
        img = real(G, w, deltas, noise)
        rows = rows_of(w, target)
        if rows.any():
            seen["forwards"] += 1            # forward 1 = step 0 of the objective
            if seen["forwards"] >= 2:
                seen["nan_forwards"] += 1
                mask = rows.to(img.device).view(-1, 1, 1, 1)
                img = torch.where(mask, torch.full_like(img, float("nan")), img)
        return img

    monkeypatch.setattr(tuning_common, "synth", synth)
    summary = run_pipeline(str(base["data"]), Layout(str(root)), batched(base["settings"], 3))

    assert seen["nan_forwards"] >= 1
    assert summary["counts"] == {"done": 1, "quarantined": 0, "failed": 2}
    assert summary["failed"] == {nan_id: "tuning_nonfinite", inf_id: "tuning_nonfinite"}
    s_nan = json.loads((root / nan_id / "status.json").read_text())
    s_inf = json.loads((root / inf_id / "status.json").read_text())
    assert s_nan["state"] == "failed" and "non-finite loss (nan) at step 1" in s_nan["detail"]
    # GANI's default (optimizer) reading meets the inf at its first objective; the reparam
    # reading's gradient at θ would ("non-finite gradient": tests/tuning/test_gani.py)
    assert s_inf["state"] == "failed" and "non-finite loss (nan) at step 0" in s_inf["detail"]
    assert summary["details"][nan_id] == s_nan["detail"]
    for image_id in (nan_id, inf_id):   # nothing half-made is left behind as a result
        assert not (root / image_id / "tuned.safetensors").exists()
        assert not (root / image_id / "metrics.json").exists()
    assert json.loads((root / good_id / "status.json").read_text())["state"] == "done"
    assert_same_result(root, base["ref"], good_id)
    lost = data_lost(root, summary, [good_id])
    assert lost == 0
    reliability.from_summary("numeric", "NaN mid-tuning + inf encoder latent in one batch of 3",
                             summary, faults_injected=2, faults_survived=2, data_lost=lost,
                             note="both failed tuning_nonfinite with detail; batch mate "
                                  "equals the unbatched run")


def test_oom_halves_the_batch_and_matches_unbatched(base, monkeypatch, reliability):
    """The tuner's forward runs out of device memory for more than one image at a time
    (on the second forward of such a batch, i.e. mid-tuning): the batch of 3 is halved
    down to single images, every image is done, and each result equals the clean unbatched
    run's."""
    root = prepared_root(base, "oom-halve")
    real = tuning_common.synth
    sizes: list[int] = []
    injected = {"n": 0}

    def synth(G, w, deltas=None, noise=None):
        if w.shape[0] > 1:
            sizes.append(w.shape[0])
            if len(sizes) % 2 == 0:          # the first forward of a big batch fits
                injected["n"] += 1
                raise oom(f"batch of {w.shape[0]}")
        return real(G, w, deltas, noise)

    monkeypatch.setattr(tuning_common, "synth", synth)
    summary = run_pipeline(str(base["data"]), Layout(str(root)), batched(base["settings"], 3))

    assert injected["n"] == 2                # 3 -> (1, 2) -> (1, 1)
    assert summary["counts"] == {"done": len(IDS), "quarantined": 0, "failed": 0}
    for image_id in IDS:
        assert_same_result(root, base["ref"], image_id)
    lost = data_lost(root, summary, IDS)
    assert lost == 0
    reliability.from_summary("numeric", "GPU OOM for batches > 1 (batch 3 halved to 1s)",
                             summary, faults_injected=injected["n"],
                             faults_survived=injected["n"], data_lost=lost,
                             note="results equal the unbatched run (rtol 1e-3)")


def test_oom_even_alone_fails_that_image_only(base, monkeypatch, reliability):
    """Whenever one image is in the tuner's forward, the device is out of memory (it does
    not fit even alone): that image fails with out_of_memory and a detail; the other two,
    tuned in the halves, are done and equal to the unbatched run."""
    root = prepared_root(base, "oom-alone")
    big_id = "astronaut_tilted"
    target = e4e_latent(root, big_id)
    real = tuning_common.synth
    injected = {"n": 0}

    def synth(G, w, deltas=None, noise=None):
        if rows_of(w, target).any():
            injected["n"] += 1
            raise oom(f"{big_id} in a batch of {w.shape[0]}")
        return real(G, w, deltas, noise)

    monkeypatch.setattr(tuning_common, "synth", synth)
    summary = run_pipeline(str(base["data"]), Layout(str(root)), batched(base["settings"], 3))

    assert injected["n"] == 3                # batch 3, its half of 2, then alone
    assert summary["counts"] == {"done": 2, "quarantined": 0, "failed": 1}
    assert summary["failed"] == {big_id: "out_of_memory"}
    status = json.loads((root / big_id / "status.json").read_text())
    assert status["state"] == "failed" and "out of device memory" in status["detail"]
    good = [i for i in IDS if i != big_id]
    for image_id in good:
        assert_same_result(root, base["ref"], image_id)
    lost = data_lost(root, summary, good)
    assert lost == 0
    reliability.from_summary("numeric", "GPU OOM even at batch 1 for one image", summary,
                             faults_injected=injected["n"], faults_survived=injected["n"],
                             data_lost=lost, note="that image failed out_of_memory; the run "
                                                  "finished, the others equal the reference")


def test_oom_retry_gets_the_failed_batch_memory_back(base, monkeypatch, reliability):
    """Before the halves run, the tensors of the batch that ran out of memory are freed
    (on a GPU, retrying while the failed attempt's activations are still referenced by the
    exception would run out of memory again)."""
    from gani.stages import get_runtime
    from gani.stages.tune import targets_tensor
    from gani.stages.common import load_png
    from gani.tuning import tune_images

    settings = batched(base["settings"], 2)
    rt = get_runtime(settings)
    ids = IDS[:2]
    targets = targets_tensor([load_png((base["ref"] / i / "aligned.png").read_bytes())
                              for i in ids], rt, settings.domain)
    w0 = torch.cat([e4e_latent(base["ref"], i) for i in ids])
    real = tuning_api._run_batch
    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def run_batch(method, G, t, w, cfg, loss, **kw):
        if held:
            alive_at_retry.append(held[-1]() is not None)
        if t.shape[0] > 1:
            activations = torch.empty(t.shape[0], 1 << 16)   # what the failed batch held
            held.append(weakref.ref(activations))
            raise oom("batch of 2")
        return real(method, G, t, w, cfg, loss, **kw)

    monkeypatch.setattr(tuning_api, "_run_batch", run_batch)
    res = tune_images(settings.tune.method, rt.G, targets, w0, settings.tune, rt.loss,
                      on_oom="isolate")
    assert len(res) == 2 and all(r.ok for r in res)
    assert alive_at_retry == [False, False]
    reliability.add("numeric", "OOM retry releases the failed batch's tensors first", images=2,
                    done=2, faults_injected=1, faults_survived=1, data_lost=0,
                    note="tuning API; weakref to the failed batch's tensor is dead at retry")


@pytest.mark.slow
def test_numeric_faults_through_the_prefect_flow(base, prefect_api, monkeypatch, reliability):
    """The Prefect flow with a batch of 3: one image out of memory even alone, one turning
    NaN mid-tuning. The tune task does not fail; the two images are failed with their
    reasons and details, the third is done and equal to the unbatched run."""
    from flows.invert import run_invert

    root = prepared_root(base, "flow")
    oom_id, nan_id, good_id = "astronaut_tilted", "astronaut_mirrored", "astronaut"
    oom_w, nan_w = e4e_latent(root, oom_id), e4e_latent(root, nan_id)
    real = tuning_common.synth
    injected = {"oom": 0, "nan": 0, "nan_forwards": 0}

    def synth(G, w, deltas=None, noise=None):
        if rows_of(w, oom_w).any():
            injected["oom"] += 1
            raise oom(f"{oom_id} in a batch of {w.shape[0]}")
        img = real(G, w, deltas, noise)
        rows = rows_of(w, nan_w)
        if rows.any():
            injected["nan_forwards"] += 1
            if injected["nan_forwards"] >= 2:
                injected["nan"] = 1
                mask = rows.to(img.device).view(-1, 1, 1, 1)
                img = torch.where(mask, torch.full_like(img, float("nan")), img)
        return img

    monkeypatch.setattr(tuning_common, "synth", synth)
    summary = run_invert(str(base["data"]), str(root), batched(base["settings"], 3))

    assert summary["counts"] == {"done": 1, "quarantined": 0, "failed": 2}
    assert summary["failed"] == {oom_id: "out_of_memory", nan_id: "tuning_nonfinite"}
    assert "out of device memory" in summary["details"][oom_id]
    assert "non-finite loss" in summary["details"][nan_id]
    assert_same_result(root, base["ref"], good_id)
    lost = data_lost(root, summary, [good_id])
    assert lost == 0
    n = injected["oom"] + injected["nan"]
    reliability.from_summary("numeric", "Prefect flow: OOM alone + NaN mid-tuning, batch 3",
                             summary, faults_injected=n, faults_survived=n, data_lost=lost,
                             note="tune task completed; reasons out_of_memory, "
                                  "tuning_nonfinite")
